"""Tabular data: one CSV/TSV/Parquet file (split here) or a folder with train.csv (+ val.csv, test.csv).

An input is one row as a dict {column: value} of the feature columns (every column but `--target`); the
column encoder of the backbone (backbones/tabular.py) turns rows into numbers. Rows whose target is missing
are skipped and listed; missing feature values are kept (the encoder imputes them) and counted per column.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from headstart.data.base import (LabeledData, Modality, csv_delimiter, file_encoding, label_separator_of, linear_baseline,
                                looks_multilabel, multi_hot, refuse_multilabel_of_several, register_modality,
                                split_unlabeled, with_task)
from headstart.data.splits import random_split, split_targets, stratified_split
from headstart.errors import UserError, warn

TABLE_EXTENSIONS = {".csv", ".tsv", ".parquet", ".pq"}
SPLIT_FILES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
REGRESSION_MIN_DISTINCT = 20  # a numeric target with more distinct values than this is regressed, not classified
# A column whose present values are at least this share numbers, the rest at most GAP_WORDS distinct words ('?', '-',
# 'unknown': UCI's tables mark gaps with '?'), is numeric with those words read as missing, as a feature and as a
# target. Whole, it was read as categories: ten '?' in Carseats' Price took regression R^2 0.748 -> 0.552, and eight
# in its Sales target made a 330-class classification.
NUMERIC_SHARE = 0.9
GAP_WORDS = 3

Row = dict  # {column: value}; missing values are None


def read_table(path: str | Path):
    """A pandas DataFrame of `path` (CSV, TSV or Parquet); empty strings and NA markers become missing."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"table {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except ImportError:
            raise UserError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        sep = csv_delimiter(path)  # ";" comes with a decimal comma: the spreadsheet locales that write it
        table = pd.read_csv(path, sep=sep, decimal="," if sep == ";" else ".", skipinitialspace=True,
                            encoding=file_encoding(path))
        table.columns = [str(c).strip() for c in table.columns]  # "sw " is the column sw, as the header reads to a person
        return table
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the file is empty (expected a header row of column names)") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: byte {err.start} is not {err.encoding}: the file mixes encodings; save it as UTF-8") from None
    except pd.errors.ParserError as err:
        raise UserError(f"{path}: cannot parse the table: {str(err).splitlines()[0]}") from None


def table_columns(path: Path) -> list[str]:
    """A table's column names from its header (CSV, TSV) or schema (Parquet) alone; [] when it cannot be read."""
    import csv

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        with open(path, newline="", encoding=file_encoding(path), errors="replace") as f:
            return [c.strip() for c in next(csv.reader(f, delimiter=csv_delimiter(path)), [])]
    except (OSError, ValueError, ImportError):
        return []


def clean_value(v):
    """A cell as a plain Python value: None for missing, int/float for numbers, str otherwise (JSON-friendly)."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, str):  # "setosa " is setosa: spreadsheets keep stray spaces a person cannot see
        return v.strip() or None
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def label_string(v) -> str:
    """A class label as text: 1.0 and 1 are the same class "1" (pandas reads int columns with gaps as floats)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# A number as spreadsheets export it: a currency sign, thousands separated by commas in groups of three, a percent
# sign ("$1,200", "-€3.50", "12%"). Only these forms: "12,5" or "1,23" stay text, being ambiguous.
DECORATED_NUMBER = re.compile(r"([-+]?)[$€£¥]?\s*([-+]?)(\d{1,3}(?:,\d{3})+|\d*)(\.\d+)?\s*%?")


def as_number(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    text = str(v).strip()
    try:
        x = float(text)
    except ValueError:
        match = DECORATED_NUMBER.fullmatch(text)
        if not match or not (match[3] or match[4]) or (match[1] and match[2]):
            return None
        x = float(f"{match[1] or match[2]}{match[3].replace(',', '') or '0'}{match[4] or ''}")
    return x if math.isfinite(x) else None  # "inf" would make the column's mean and spread NaN


def table_rows(path: Path) -> tuple[list[str], list[Row], list[str]]:
    """(columns, rows as dicts, where each row is: "file row N", N the spreadsheet row with the header as row 1)."""
    df = read_table(path)
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        raise UserError(f"{path}: duplicate column names ({', '.join(sorted({c for c in columns if columns.count(c) > 1}))})")
    first = 2 if path.suffix.lower() in (".csv", ".tsv") else 1
    rows = [{c: clean_value(v) for c, v in zip(columns, values)} for values in df.itertuples(index=False, name=None)]
    return columns, rows, [f"{path} row {i + first}" for i in range(len(rows))]


def target_columns(target: str | None, columns) -> list[str]:
    """--target as columns: one name, or several joined by commas (a multi-task fit), unless the whole is a column."""
    if not target:
        return []
    return [target] if target in columns else [t.strip() for t in target.split(",") if t.strip()]


def _check_target(path: Path, columns: list[str], target: str | None) -> list[str]:
    """The target column(s), each checked to be in the file."""
    if not target:
        raise UserError(f"{path}: tabular data needs --target COLUMN, the column to predict (columns: {', '.join(columns)}; "
                        "several, comma-separated, fit a head each)")
    names = target_columns(target, columns)
    for name in names:
        if name not in columns:
            raise UserError(f"{path}: no column {name!r} for --target; columns found: {', '.join(columns)}")
    if len(set(names)) < len(names):
        raise UserError(f"{path}: --target {target} names a column twice")
    return names


def gap_words(values: list) -> set[str] | None:
    """For a column of numbers with a few words marking gaps: those words (an empty set for numbers only); None when
    the column is not numeric (NUMERIC_SHARE, GAP_WORDS). `values` are the present (non-missing) cells."""
    words = [str(v).strip() for v in values if as_number(v) is None]
    numeric = len(values) - len(words)
    return set(words) if numeric >= NUMERIC_SHARE * len(values) and len(set(words)) <= GAP_WORDS else None


def detect_task(values: list, requested: str = "auto") -> str:
    """cfg.task if given; else regression for a numeric target (gap words aside) with many distinct values or fractions."""
    if requested != "auto":
        return requested
    if not values or gap_words(values) is None:
        return "classification"
    numbers = [x for x in map(as_number, values) if x is not None]
    fractional = any(not float(x).is_integer() for x in numbers)
    return "regression" if fractional or len(set(numbers)) > REGRESSION_MIN_DISTINCT else "classification"


def _split_files(root: Path) -> dict[str, Path]:
    found = {}
    for split, names in SPLIT_FILES.items():
        for name in names:
            for ext in (".csv", ".tsv", ".parquet"):
                if (root / f"{name}{ext}").is_file():
                    found.setdefault(split, root / f"{name}{ext}")
    return found


def _feature_row(row: Row, target: str | None) -> Row:
    """The row less its target column(s): a feature must not be what is predicted."""
    targets = set(target_columns(target, row))
    return {c: v for c, v in row.items() if c not in targets}


class _Targets:
    """Turns target cells into targets: floats (regression), class indices (classification) or multi-hot vectors
    of labels joined by `separator` (multi-label: what `evaluate` reads for a multi-label model)."""

    def __init__(self, task: str, classes: list[str], gaps: set[str] = frozenset(), separator: str = ";"):
        self.task, self.index, self.gaps, self.separator = task, {c: i for i, c in enumerate(classes)}, gaps, separator

    def __call__(self, value) -> tuple[object, str]:
        if value is None:
            return None, "missing target"
        if str(value).strip() in self.gaps:
            return None, f"target {value!r} read as missing"
        if self.task == "regression":
            x = as_number(value)
            return (x, "") if x is not None else (None, f"target {value!r} is not a number")
        label = label_string(value)
        if self.task == "multilabel":
            return multi_hot(label, list(self.index), self.separator)
        if label not in self.index:
            return None, f"label {label!r} is not one of the classes ({', '.join(self.index)})"
        return self.index[label], ""


def multitask_readers(task) -> tuple[list[str], list]:
    """A multi-task model's target columns and a reader of each one's cells, as it was fitted."""
    return [p["name"] for p in task.parts], [_Targets(p["task"].name, p["classes"]) for p in task.parts]


def target_values(row: Row, targets: list[str], readers: list) -> tuple[object, str]:
    """(the target: one value, or a list of one per column with several targets; "") or (None, why not, naming the
    column with several)."""
    ys = []
    for target, to_target in zip(targets, readers):
        y, reason = to_target(row.get(target))
        if reason:
            return None, (f"{reason} ({target})" if reason == "missing target" else
                          f"{target}: {reason}" if len(targets) > 1 else reason)
        ys.append(y)
    return (ys[0] if len(ys) == 1 else ys), ""


def labeled_items(rows, targets: list[str], readers: list) -> tuple[list, list[tuple[str, str]]]:
    """(input, target) items of `rows` given as (where, input, {target column: cell}); a row missing or misreading
    any target is skipped, with where and why."""
    items, skipped = [], []
    for where, x, labels in rows:
        y, reason = target_values(labels, targets, readers)
        if reason:
            skipped.append((where, reason))
        else:
            items.append((x, y))
    return items, skipped


def _items(rows: list[Row], wheres: list[str], targets: list[str], readers: list) -> tuple[list, list[tuple[str, str]]]:
    """(features, target) per table row: the row less its target columns is the input."""
    return labeled_items(((where, {c: v for c, v in row.items() if c not in targets}, row) for row, where in zip(rows, wheres)),
                         targets, readers)


def load_table_data(source: str | Path, target: str | None, task: str = "auto", val_fraction: float = 0.15,
                    test_fraction: float = 0.15, seed: int = 0, label_separator: str = ";") -> LabeledData:
    """The rows of `source` with `target` (one column, or several comma-separated: a multi-task fit, each column
    classified or regressed as `task` or its values say)."""
    root = Path(source)
    if not root.exists():
        raise UserError(f"data {root} does not exist")
    files = _split_files(root) if root.is_dir() else {"train": root}
    if "train" not in files:
        raise UserError(f"{root}: a tabular folder needs train.csv (optionally val.csv, test.csv)")
    tables = {split: table_rows(path) for split, path in files.items()}
    columns = tables["train"][0]
    for split, (cols, _, _) in tables.items():
        targets = _check_target(files[split], cols, target)
    described = [describe_target(files["train"], tables["train"][1], name, task, label_separator) for name in targets]
    readers = [reader for _, reader in described]

    splits, skipped = {}, []
    for split in ("train", "val", "test"):
        if split in tables:
            _, rows, wheres = tables[split]
            splits[split], bad = _items(rows, wheres, targets, readers)
            skipped += bad
        else:
            splits[split] = []
    train, val, test = splits["train"], splits["val"], splits["test"]

    specs = [spec for spec, _ in described]

    def split_off(items, fraction):
        if len(specs) > 1:
            return split_targets(items, fraction, seed, specs)
        if specs[0]["task"] == "classification":
            return stratified_split(items, [y for _, y in items], fraction, seed)
        return random_split(items, fraction, seed)

    if not test and root.is_file():
        train, test = split_off(train, test_fraction)
    if not val:
        train, val = split_off(train, val_fraction)
    if not train:
        raise UserError(f"{root}: no training rows left after skipping {len(skipped)} row(s) and splitting")

    features = [c for c in columns if c not in targets]
    everything = train + val + test
    missing = {c: n for c in features if (n := sum(1 for x, _ in everything if x.get(c) is None))}
    info = {"target": target, "columns": features, "missing": missing}
    layout = "table-splits" if root.is_dir() else "table"
    if len(targets) > 1:
        from headstart.tasks import MultiTask

        return LabeledData("tabular", "multitask", MultiTask.output_names(specs), train, val, test, layout, skipped,
                           {**info, "targets": specs})
    spec = described[0][0]
    if spec["task"] == "regression":
        ys = np.array([y for _, y in train], dtype=np.float64)
        info["target_range"] = [float(ys.min()), float(ys.max())]
    return LabeledData("tabular", spec["task"], spec["classes"] or [target], train, val, test, layout, skipped, info)


def describe_target(path: Path, rows: list[Row], target: str, task: str, label_separator: str) -> tuple[dict, "_Targets"]:
    """One target column: ({"name", "task", "classes"}, its reader of cells), from its training values."""
    train_values = [r[target] for r in rows if r[target] is not None]
    if not train_values:
        raise UserError(f"{path}: every row's {target!r} is missing; nothing to learn from")
    requested, task = task, detect_task(train_values, task)
    gaps = gap_words(train_values) or set()  # in a numeric target, words mark gaps: those rows are skipped
    classes = sorted({label_string(v) for v in train_values if str(v).strip() not in gaps}) if task == "classification" else []
    if (requested == "auto" and task == "classification" and len(train_values) >= 20 and len(classes) > len(train_values) / 2
            and not looks_multilabel(classes, label_separator)):  # sets of labels ("a;b") are many combinations of few
        raise UserError(f"{path}: column {target!r} has {len(classes)} distinct values in {len(train_values)} rows, "
                        f"so most classes would have one example; choose another --target, or pass --task regression "
                        f"(its rows that are not numbers are then skipped) or --task classification")
    return {"name": target, "task": task, "classes": classes}, _Targets(task, classes, gaps)


def _model_target(model) -> str:
    target = getattr(model.backbone.preprocess, "target", None)
    if target:
        return target
    if model.task.name == "regression" and model.classes:
        return model.classes[0]
    raise UserError("this model does not record its target column; cannot read labels for it")


def load_labeled_rows(source: str | Path, model) -> tuple[list, list[tuple[str, str]], str]:
    """Every row of a table (or a folder's test.csv, else all its split files) with the model's target."""
    root = Path(source)
    if not root.exists():
        raise UserError(f"data {root} does not exist")
    if root.is_dir():
        found = _split_files(root)
        files = [found["test"]] if "test" in found else list(found.values())
        if not files:
            raise UserError(f"{root}: no table found (expected a CSV/Parquet file, or a folder with test.csv)")
    else:
        files = [root]
    target = _model_target(model)
    readers = (multitask_readers(model.task)[1] if model.task.name == "multitask" else
               [_Targets(model.task.name, model.classes, separator=label_separator_of(model) or ";")])
    items, skipped = [], []
    for path in files:
        columns, rows, wheres = table_rows(path)
        good, bad = _items(rows, wheres, _check_target(path, columns, target), readers)
        items += good
        skipped += bad
    if not items:
        raise UserError(f"{root}: no labeled rows (column {target!r})")
    scored = ", ".join(map(str, files)) + (" (no test file)" if root.is_dir() and len(files) > 1 else "")
    return items, skipped, scored


def _warn_of_cells(encoder, rows: list[Row], names: list[str]) -> None:
    """Cells predicted from, but not as given (read as missing, clipped): said once per kind, naming the first."""
    for cells, what in ((encoder.unreadable_cells(rows), "could not be read and count as missing"),
                        (encoder.clipped_cells(rows), "were clipped")):
        if cells:
            shown = "; ".join(f"{names[i]} column {column}: {why}" for i, column, why in cells[:3])
            warn(f"{len(cells)} cell(s) {what}: {shown}" + (" ..." if len(cells) > 3 else ""))


def collect_table_rows(inputs: list[str], target: str | None) -> tuple[list[Row], list[str]]:
    """Rows of CSV/TSV/Parquet files (the target column, when present, is dropped); names "file:row N"."""
    rows, names = [], []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            found = _split_files(path)
            paths = [found["test"]] if "test" in found else sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_EXTENSIONS)
        elif path.is_file():
            paths = [path]
        else:
            raise UserError(f"{arg} does not exist (a tabular model predicts rows of CSV/TSV/Parquet files)")
        for p in paths:
            if p.suffix.lower() not in TABLE_EXTENSIONS:
                raise UserError(f"{p}: not a table (expected .csv, .tsv or .parquet)")
            _, file_rows, _ = table_rows(p)
            first = 2 if p.suffix.lower() in (".csv", ".tsv") else 1
            rows += [_feature_row(r, target) for r in file_rows]
            names += [f"{p}:row {i + first}" for i in range(len(file_rows))]
    if not rows:
        raise UserError(f"no rows found in {', '.join(inputs)}")
    return rows, names


@register_modality
class Tables(Modality):
    name = "tabular"
    options = ("target",)
    default_backbone = "mlp"
    input_noun = "row"

    def claims(self, source: Path, cfg) -> bool:
        if not getattr(cfg, "target", None):
            return False
        if source.is_file():
            return source.suffix.lower() in TABLE_EXTENSIONS
        return source.is_dir() and "train" in _split_files(source)

    def hint(self, source: Path) -> str:
        table = source if source.is_file() else _split_files(source).get("train") if source.is_dir() else None
        if table is None or Path(table).suffix.lower() not in TABLE_EXTENSIONS:
            return ""
        columns = table_columns(Path(table))
        if not columns:
            return ""
        shown = ", ".join(columns[:12]) + (f" and {len(columns) - 12} more" if len(columns) > 12 else "")
        return f"for a table, name the column to predict: --target COLUMN (columns: {shown})"

    def load(self, cfg) -> LabeledData:
        # multi-label: read as classes ("a;b" one of them) here; fitting turns them into sets of labels (as_multilabel)
        task = "classification" if cfg.task == "multilabel" else cfg.task
        if len(target_columns(cfg.target, ())) > 1:
            refuse_multilabel_of_several(cfg.task, "--target")
        return with_task(load_table_data(cfg.data, cfg.target, task, cfg.val_fraction, cfg.test_fraction, cfg.seed,
                                         cfg.label_separator), cfg)

    def load_labeled(self, source, model):
        return load_labeled_rows(source, model)

    def collect_inputs(self, inputs, model):
        rows, names = collect_table_rows(inputs, getattr(model.backbone.preprocess, "target", None))
        _warn_of_cells(model.backbone.preprocess, rows, names)
        return rows, names

    def unlabeled(self, cfg):
        """Rows without labels (`pretrain`): every column is a feature but `--target`, the label column of rows that
        have one (a later fit predicts it: the body must not read it)."""
        rows, _ = collect_table_rows(cfg.inputs, cfg.target)
        data = split_unlabeled(self.name, rows, [], cfg)
        data.info["columns"] = [c for c in rows[0] if all(c in r for r in rows)]  # files may differ: what all share
        return data

    def from_values(self, values, model):
        target = getattr(model.backbone.preprocess, "target", None)
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                raise UserError(f"input {i + 1} is a {type(value).__name__}, not a row: a tabular model predicts "
                                "{column: value} objects")
        rows = [_feature_row({str(c).strip(): clean_value(v) for c, v in row.items()}, target) for row in values]
        names = [f"row {i + 1}" for i in range(len(values))]
        _warn_of_cells(model.backbone.preprocess, rows, names)
        return rows, names

    def classical_baseline(self, train, test, task):
        """The raw table, encoded as the MLP sees it (standardised numbers, one-hot categories, missing flags), into
        logistic regression (classification) or ridge (regression): the model a statistician would fit first."""
        from headstart.backbones.tabular import ColumnEncoder

        encoder = ColumnEncoder().fit([x for x, _ in train])
        score = linear_baseline(encoder.transform([x for x, _ in train]).numpy(), [y for _, y in train],
                                encoder.transform([x for x, _ in test]).numpy(), [y for _, y in test], task)
        name = "ridge regression on the raw table" if task == "regression" else "logistic regression on the raw table"
        return None if score is None else (name, score)
