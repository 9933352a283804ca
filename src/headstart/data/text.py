"""Text data: one CSV/TSV/JSONL file of `text,label` rows (split here), or a folder of train/val/test files.

Files are UTF-8, or a legacy 8-bit encoding (cp1252, latin-1) when no non-ASCII byte in them is UTF-8.
Bad rows (empty text, missing label, corrupt bytes in a UTF-8 file, a broken JSON line) are skipped and listed as
("file row N", reason), never crash a run; wrong column names, no rows or a single label are one clear error.
Inputs are the text strings themselves; a text's feature-cache identity is the hash of its content.
"""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

from headstart.data.base import (LabeledData, Modality, csv_delimiter, file_encoding, label_reader, linear_baseline,
                                refuse_multilabel_of_several, register_modality, split_unlabeled, with_task)
from headstart.data.splits import split_targets, stratified_split
from headstart.errors import UserError

TABLE_EXTENSIONS = (".csv", ".tsv", ".jsonl")
SPLIT_STEMS = {"train": ("train",), "val": ("val", "valid", "validation", "dev"), "test": ("test",)}
NAME_CHARS = 80

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents are fine


def _open(path: Path):
    # surrogateescape: bytes the file's encoding does not define survive reading and are caught per row (_decodes).
    return open(path, newline="", encoding=file_encoding(path), errors="surrogateescape")


def read_records(path: Path, limit: int | None = None) -> tuple[list[str], list[tuple[int, dict | None]]]:
    """(columns, [(row number, record or None when unreadable)]), the first `limit` records only when given. CSV/TSV
    rows count the header as row 1."""
    records: list[tuple[int, dict | None]] = []
    with _open(path) as f:
        if path.suffix.lower() == ".jsonl":
            columns: list[str] = []
            for row_no, line in enumerate(f, start=1):
                if limit is not None and len(records) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                rec = rec if isinstance(rec, dict) else None
                if rec is not None and not columns:
                    columns = list(rec)
                records.append((row_no, rec))
            return columns, records
        # TSVs use CSV quoting, as pandas and the csv module write (and read) them.
        reader = csv.reader(f, delimiter=csv_delimiter(path))
        columns = [c.strip() for c in next(reader, [])]
        for row_no, row in enumerate(reader, start=2):
            if limit is not None and len(records) >= limit:
                break
            if row:
                records.append((row_no, dict(zip(columns, row))))
    return columns, records


def _as_text(value) -> str | None:
    """A field as a string (None when absent); JSONL numbers and lists become their JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _decodes(value: str | None) -> bool:
    """False for text read with surrogateescape from bytes that are not UTF-8."""
    if value is None:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_rows(path: Path, text_column: str, label_column: str | None) -> tuple[list[tuple[str, str, str | None]], list[tuple[str, str]]]:
    """Usable rows as (where, text, label) and skipped rows as (where, reason); label_column None: texts only. Several
    label columns ("topic,sentiment": a multi-task fit) give each row's labels as {column: label}."""
    from headstart.data.tabular import target_columns

    columns, records = read_records(path)
    labels = target_columns(label_column, columns)
    missing = [c for c in [text_column, *labels] if c not in columns]
    if missing:
        raise UserError(f"{path}: no column {' or '.join(map(repr, missing))} (found: {', '.join(columns) or 'no header'}); "
                        "pass --text-column / --label-column")
    rows, skipped = [], []
    for row_no, rec in records:
        where = f"{path} row {row_no}"
        if rec is None:
            skipped.append((where, "not a JSON object"))
            continue
        text = _as_text(rec.get(text_column))
        values = {c: _as_text(rec.get(c)) for c in labels}
        unlabeled = next((c for c, v in values.items() if v is None or not v.strip()), None)
        if not (_decodes(text) and all(map(_decodes, values.values()))):
            skipped.append((where, "undecodable bytes (not UTF-8)"))
        elif not text or not text.strip():
            skipped.append((where, "empty text"))
        elif unlabeled:
            skipped.append((where, "missing label" + (f" ({unlabeled})" if len(labels) > 1 else "")))
        else:
            label = None if not labels else values[labels[0]].strip() if len(labels) == 1 else {
                c: v.strip() for c, v in values.items()}
            rows.append((where, text, label))
    return rows, skipped


def split_file(root: Path, split: str) -> Path | None:
    for stem in SPLIT_STEMS[split]:
        for ext in TABLE_EXTENSIONS:
            if (root / f"{stem}{ext}").is_file():
                return root / f"{stem}{ext}"
    return None


def _items(rows, classes: list[str], fix: str = "add training rows with it, or remove those rows") -> list[tuple[str, int]]:
    """(text, class index) per row; a label outside `classes` is an error saying `fix`."""
    index = {c: i for i, c in enumerate(classes)}
    for where, _, label in rows:
        if label not in index:
            shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise UserError(f"{where}: label {label!r} is not one of the classes ({shown}); {fix}")
    return [(text, index[label]) for _, text, label in rows]


def _classes(path: Path, rows, skipped) -> list[str]:
    if not rows:
        extra = f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise UserError(f"{path}: no usable rows{extra}; expected a text column and a label column")
    return sorted({label for _, _, label in rows})


def load_text_data(source: str | Path, text_column: str = "text", label_column: str = "label", val_fraction: float = 0.15,
                   test_fraction: float = 0.15, seed: int = 0, task: str = "auto") -> LabeledData:
    """Texts and their labels; several label columns are a multi-task fit (`_MultiTargets`), each column classified
    or regressed as `task` or its values say."""
    root = Path(source)
    if not root.exists():
        raise UserError(f"data {root} does not exist")
    if root.is_file():
        train_path, held_paths = root, {}
    else:
        files = {s: split_file(root, s) for s in SPLIT_STEMS}
        if files["train"] is None:
            raise UserError(f"{root}: no train.csv, train.tsv or train.jsonl (a text folder holds train + optional val/test files)")
        train_path, held_paths = files["train"], {s: files[s] for s in ("val", "test") if files[s] is not None}
    rows, skipped = read_rows(train_path, text_column, label_column)
    labeling = _MultiTargets(train_path, rows, task, seed) if rows and isinstance(rows[0][2], dict) else None
    classes = [] if labeling else _classes(train_path, rows, skipped)
    to_items = labeling.items if labeling else lambda rows: (_items(rows, classes), [])
    split_off = labeling.split_off if labeling else lambda items, fraction: stratified_split(
        items, [y for _, y in items], fraction, seed)
    train, bad = to_items(rows)
    skipped += bad
    held = {"val": [], "test": []}
    for split, path in held_paths.items():
        split_rows, split_skipped = read_rows(path, text_column, label_column)
        held[split], bad = to_items(split_rows)
        skipped += split_skipped + bad
    val, test, layout = held["val"], held["test"], "splits"
    if root.is_file():
        train, test = split_off(train, test_fraction)
        layout = "file"
    if not val:
        train, val = split_off(train, val_fraction)
    info = {"text_column": text_column, "label_column": label_column}
    if labeling:
        return LabeledData("text", "multitask", labeling.output_names, train, val, test, layout, skipped,
                           {**info, "targets": labeling.specs})
    return LabeledData("text", "classification", classes, train, val, test, layout, skipped, info)


class _MultiTargets:
    """Several label columns of a text file: each column's task and classes from the training rows (as a table's
    target columns: `data/tabular.py`), each row's targets, and their splits (`split_targets`)."""

    def __init__(self, path: Path, rows, task: str, seed: int = 0):
        from headstart.data.tabular import describe_target
        from headstart.tasks import MultiTask

        refuse_multilabel_of_several(task, "--label-column")
        self.names = list(rows[0][2])
        described = [describe_target(path, [labels for _, _, labels in rows], name, task, ";") for name in self.names]
        self.specs, self.readers = [spec for spec, _ in described], [reader for _, reader in described]
        self.output_names = MultiTask.output_names(self.specs)
        self.seed = seed

    def items(self, rows) -> tuple[list, list[tuple[str, str]]]:
        from headstart.data.tabular import labeled_items

        return labeled_items(rows, self.names, self.readers)

    def split_off(self, items, fraction):
        return split_targets(items, fraction, self.seed, self.specs)


def guess_columns(path: Path, rows: int = 200) -> tuple[str | None, str | None]:
    """(text column, label column) a file most likely has, from its first rows: the text is the column with the
    longest values that have spaces in them, the label the other column with the fewest distinct values (two or more)."""
    columns, records = read_records(path, limit=rows)
    sample = [rec for _, rec in records if rec]
    values = {c: [_as_text(rec.get(c)) or "" for rec in sample] for c in columns}
    wordy = [c for c in columns if values[c] and sum(" " in v for v in values[c]) > len(values[c]) / 2]
    text = max(wordy, key=lambda c: sum(map(len, values[c])), default=None)
    labels = [c for c in columns if c != text and 2 <= len(set(values[c])) < max(3, len(sample) // 2)]
    label = min(labels, key=lambda c: len(set(values[c])), default=None)
    return text, label


def header_columns(path: Path) -> list[str]:
    """The columns of a CSV/TSV header or the keys of a JSONL file's first record (cheap: detection only)."""
    try:
        with open(path, newline="", encoding=file_encoding(path), errors="replace") as f:
            if path.suffix.lower() == ".jsonl":
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        return list(rec) if isinstance(rec, dict) else []
                return []
            return [c.strip() for c in next(csv.reader(f, delimiter=csv_delimiter(path)), [])]
    except (OSError, ValueError):
        return []


class UnreadableRow(str):
    """A row of a text file that holds no usable text, kept in its place among the inputs so that predictions stay
    one per row: the string is where it is ("file row N"), `reason` why it cannot be read."""

    reason: str = ""


def _texts_of_file(path: Path, column: str = "text") -> list[str]:
    """Every row of a table's `column` (its only column, where it has one) in order, an UnreadableRow for a row
    without a usable text; or a .txt file's non-empty lines."""
    if path.suffix.lower() == ".txt":
        with _open(path) as f:
            lines = [(n, t) for n, t in enumerate((line.rstrip("\r\n") for line in f), start=1) if t.strip()]
        return [t if _decodes(t) else _unreadable(f"{path} line {n}", "undecodable bytes (not UTF-8)") for n, t in lines]
    columns = header_columns(path)
    column = column if column in columns or len(columns) != 1 else columns[0]
    rows, skipped = read_rows(path, column, None)
    ordered = [(where, text) for where, text, _ in rows] + [(where, _unreadable(where, why)) for where, why in skipped]
    return [text for _, text in sorted(ordered, key=lambda row: int(row[0].rsplit(" ", 1)[1]))]


def _unreadable(where: str, reason: str) -> UnreadableRow:
    row = UnreadableRow(where)
    row.reason = reason
    return row


def _display(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= NAME_CHARS else text[: NAME_CHARS - 3] + "..."


def _given_text(text: str) -> str:
    """A text given as a value: an empty one is answered in its place (as an empty row of a file is); a lone
    surrogate (JSON allows "\\ud800") becomes U+FFFD, which the tokenizer can encode."""
    if not text.strip():
        return _unreadable(text, "empty text")
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def _argument_text(arg: str) -> str:
    """A command-line argument that is not a text file: a text, unless it names a path (it has a folder separator
    or a file suffix, and exists, or it names a missing text file). Those are answered in place: a typo in a file name
    or an image given to a text model must not be classified as the text of its name."""
    one_token = arg.strip() and not any(ch.isspace() for ch in arg)
    looks_like_path = one_token and ("/" in arg or "\\" in arg or re.fullmatch(r".+\.[A-Za-z0-9]{1,8}", arg))
    try:
        exists = bool(looks_like_path) and Path(arg).exists()
    except (OSError, ValueError):
        exists = False
    if exists:
        what = "a folder" if Path(arg).is_dir() else "not a text file"
        return _unreadable(arg, f"{what}: a text model reads texts, and {', '.join(TABLE_EXTENSIONS)} or .txt files")
    if looks_like_path and Path(arg).suffix.lower() in TABLE_EXTENSIONS + (".txt",):
        return _unreadable(arg, "no such file")
    return _given_text(arg)


def _is_text_file(arg: str) -> bool:
    try:
        p = Path(arg)
        return p.suffix.lower() in TABLE_EXTENSIONS + (".txt",) and p.is_file()
    except (OSError, ValueError):  # a long literal text is no file name
        return False


@register_modality
class Texts(Modality):
    name = "text"
    options = ("text_column", "max_length")
    default_backbone = "minilm-l6"
    input_noun = "text"

    def claims(self, source: Path, cfg) -> bool:
        if getattr(cfg, "target", None) is not None:
            return False
        table = split_file(source, "train") if source.is_dir() else source
        if table is None or table.suffix.lower() not in TABLE_EXTENSIONS:
            return False
        columns = header_columns(table)
        return cfg.text_column in columns and "path" not in columns

    def hint(self, source: Path) -> str:
        table = split_file(source, "train") if source.is_dir() else source
        if table is None or table.suffix.lower() not in TABLE_EXTENSIONS or not table.is_file():
            return ""
        if any(len(c) > 30 and " " in c for c in header_columns(table)):  # a sentence where a column name should be
            return "for text, its first row looks like a text, not column names: start the file with a header row text,label"
        text, label = guess_columns(table)
        return f"for text, name its columns: --text-column {text} --label-column {label}" if text and label else ""

    def load(self, cfg) -> LabeledData:
        data = load_text_data(cfg.data, cfg.text_column, cfg.label_column, cfg.val_fraction, cfg.test_fraction, cfg.seed,
                              cfg.task)
        return with_task(data, cfg)  # --task regression: the label column's numbers as targets

    def load_labeled(self, source, model):
        """A labeled file with the run's text/label columns, or a folder's test (else validation) file."""
        root = Path(source)
        if not root.exists():
            raise UserError(f"data {root} does not exist")
        path = root if root.is_file() else split_file(root, "test") or split_file(root, "val")
        if path is None:
            raise UserError(f"{root}: no test or validation file (.csv, .tsv, .jsonl) to evaluate on")
        scored = str(path) if root.is_file() or split_file(root, "test") else f"{path} (no test file)"
        columns = getattr(model, "data_options", {})  # the columns the run was trained with
        rows, skipped = read_rows(path, columns.get("text_column", "text"), columns.get("label_column", "label"))
        if not rows:
            raise UserError(f"{path}: no usable labeled rows ({len(skipped)} skipped)")
        if model.task.name == "multitask":  # each label column read as its target was
            from headstart.data.tabular import labeled_items, multitask_readers

            items, bad = labeled_items(rows, *multitask_readers(model.task))
            return items, skipped + bad, scored
        read = label_reader(model)
        if read:  # a regression model's number, a multi-label model's "cat;dog" as a multi-hot target
            return [(text, read(label, where)) for where, text, label in rows], skipped, scored
        fix = "remove the rows with it to score the rest, or teach the model the class first: headstart update RUN DATA"
        return _items(rows, model.classes, fix), skipped, scored

    def classical_baseline(self, train, test, task):
        """TF-IDF of words and word pairs (sublinear counts) + logistic regression (ridge for a regression target):
        the usual strong text baseline."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        x_train = vectorizer.fit_transform([x for x, _ in train])
        score = linear_baseline(x_train, [y for _, y in train], vectorizer.transform([x for x, _ in test]),
                                [y for _, y in test], task)
        model = "ridge regression" if task == "regression" else "logistic regression"
        return None if score is None else (f"TF-IDF + {model}", score)

    def collect_inputs(self, inputs, model):
        """Texts given as arguments, and every row of text files (the run's text column), unusable rows included in
        their place (`unreadable` names them): one prediction per row."""
        column = getattr(model, "data_options", {}).get("text_column") or "text"
        texts: list[str] = []
        for arg in inputs:
            texts += _texts_of_file(Path(arg), column) if _is_text_file(arg) else [_argument_text(str(arg))]
        if not texts:
            raise UserError("no texts to predict (give texts, or .csv/.tsv/.jsonl files with a text column, or .txt files)")
        return texts, [t if isinstance(t, UnreadableRow) else _display(t) for t in texts]

    def unreadable(self, inputs):
        return {i: x.reason for i, x in enumerate(inputs) if isinstance(x, UnreadableRow)}

    def unlabeled(self, cfg):
        """Texts without labels (`pretrain`): files' --text-column (.txt: every line), or the arguments themselves;
        rows without a usable text are listed as skipped."""
        texts = [t for arg in cfg.inputs for t in (_texts_of_file(Path(arg), cfg.text_column) if _is_text_file(arg) else [str(arg)])]
        skipped = [(str(t), t.reason) for t in texts if isinstance(t, UnreadableRow)]
        return split_unlabeled(self.name, [t for t in texts if not isinstance(t, UnreadableRow)], skipped, cfg)

    def from_values(self, values, model):
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise UserError(f"input {i + 1} is a {type(value).__name__}, not a text: a text model predicts strings")
        texts = [_given_text(t) for t in values]
        return texts, [t if isinstance(t, UnreadableRow) else _display(t) for t in texts]
