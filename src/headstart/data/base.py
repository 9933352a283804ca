"""The modality contract: a loader turns user data into labeled inputs; the backbone turns inputs into tensors.

An input is whatever identifies one example for its modality: an image or audio file path, a text string,
a table row (dict column -> value). Targets are class indices (classification) or floats (regression).
Nothing downstream of `data/` and `backbones/` asks which modality it is.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import UserError, warn
from headstart.registry import Registry

Item = tuple[Any, Any]  # (input, target)
MIN_UNLABELED = 8  # pretrain: fewer inputs give too few negatives in a batch to learn from
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


@dataclass
class LabeledData:
    modality: str
    task: str  # "classification" or "regression"
    classes: list[str]  # class names; for regression the target column's name(s)
    train: list[Item]
    val: list[Item]
    test: list[Item]
    layout: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or "file row N", reason)
    info: dict = field(default_factory=dict)  # facts a backbone adapts to (native image size, columns, ...)
    # --task as given ("auto", or "multilabel" where auto found label sets): set by `with_task`; check_classes
    # questions single-example classes only where nothing chose the task
    task_chosen: str = "auto"

    @property
    def inputs(self) -> dict[str, list]:
        return {s: [x for x, _ in getattr(self, s)] for s in ("train", "val", "test")}

    def summary(self) -> dict:
        out = {
            "modality": self.modality,
            "task": self.task,
            "layout": self.layout,
            "classes": self.classes,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            **{k: v for k, v in self.info.items() if _is_jsonable(v)},
            "skipped": [{"where": p, "reason": r} for p, r in self.skipped],
        }
        if self.task == "multilabel":
            out["class_counts"] = {
                s: {c: int(sum(y[i] for _, y in getattr(self, s))) for i, c in enumerate(self.classes)} for s in ("train", "val", "test")
            }
        if self.task == "classification":
            out["class_counts"] = {
                s: {c: n for c, n in zip(self.classes, _counts(getattr(self, s), len(self.classes)))} for s in ("train", "val", "test")
            }
        return out


def check_classes(data: LabeledData, source) -> LabeledData:
    """A classifier learns from two classes at least. Checked where a model is fitted, not where data is read: an
    update's new data may hold one new class only, and the run's classes join it. Class names that differ only in
    case or spacing ("Positive", "positive") are two classes, as given, and a warning asks whether they are one."""
    if data.task == "classification" and len(data.classes) < 2:
        raise UserError(f"{source}: only one class ({data.classes[0]!r}); a classifier needs at least two (to teach a "
                        f"fitted model a new class: headstart update RUN {source})")
    for target in data.info.get("targets", []) if data.task == "multitask" else []:
        if target["task"] == "classification" and len(target["classes"]) < 2:
            raise UserError(f"{source}: target {target['name']!r} has one class ({target['classes'][0]!r}) in the training "
                            "rows; a classifier needs at least two: drop it from --target")
    alike: dict[str, list[str]] = {}
    for name in data.classes:
        alike.setdefault(re.sub(r"[\s_-]+", " ", name).strip().casefold(), []).append(name)
    for names in (group for group in alike.values() if len(group) > 1):
        warn(f"{source}: classes {', '.join(map(repr, names))} differ only in case or spacing and are learned apart; "
             "give them one spelling if they are one class")
    if data.task == "classification" and data.task_chosen == "auto":
        _check_single_examples(data, source)
    return data


# Numbers read as labels (a regression target, or the text column as --label-column) make one class per example: a
# class of one example is never in a test split and cannot be learned. Refused where more than half of the classes
# have one example, from 10 classes on: a small legitimate set (3 classes of 2, a few rare classes beside common
# ones) passes, and a mistaken label column, nearly all of whose values differ, rarely has fewer than 10 of them.
SINGLES_MIN_CLASSES = 10


def _check_single_examples(data: LabeledData, source) -> None:
    counts = Counter(y for split in (data.train, data.val, data.test) for _, y in split)
    singles = sum(counts[i] == 1 for i in range(len(data.classes)))
    if len(data.classes) < SINGLES_MIN_CLASSES or singles <= len(data.classes) / 2:
        return
    if all(_finite_number(c) is not None for c in data.classes):
        fix = "the labels are all numbers: pass --task regression to predict them as a number, or"
    elif data.info.get("label_column"):
        fix = f"check --label-column (it read {data.info['label_column']!r}), or pass"
    elif data.info.get("target"):
        fix = f"check --target (it read {data.info['target']!r}), or pass"
    else:
        fix = "check that the labels name classes, or pass"
    raise UserError(f"{source}: {singles} of {len(data.classes)} classes have one example, which can be neither learned "
                    f"nor tested; {fix} --task classification to fit these classes anyway")


def _finite_number(label: str) -> float | None:
    try:
        value = float(label)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def label_number(label: str, where: str) -> float:
    """A regression label as a number, or a UserError naming `where` (fit and evaluate read labels alike)."""
    value = _finite_number(label)
    if value is None:
        raise UserError(f"{where}: label {label!r} is not a number, and a regression target must be one: correct or "
                        "remove it")
    return value


def label_reader(model):
    """How evaluate reads a label for `model` other than as one of its classes: a regression model's as a number, a
    multi-label model's as a set joined by its separator (a multi-hot vector); None for classification. Called as
    read(label, where), `where` naming the file or row in an error."""
    if model.task.name == "regression":
        return label_number
    separator = label_separator_of(model)
    if separator:
        return lambda label, where: required_multi_hot(label, model.classes, separator, where)
    return None


def with_task(data: LabeledData, cfg) -> LabeledData:
    """Data read as classes, turned into what `cfg.task` asks: numeric labels become regression targets (so fit,
    rank, compare and update read the same targets); a multi-label reading (asked for, or label sets under auto)
    is noted in `task_chosen`, the split into labels left to fitting (as_multilabel)."""
    if data.task == "classification" and cfg.task == "regression":
        data = as_regression(data, cfg.label_column, where=str(cfg.data))
    sets = cfg.task == "auto" and data.task == "classification" and looks_multilabel(data.classes, cfg.label_separator)
    data.task_chosen = "multilabel" if sets else cfg.task
    return data


def refuse_multilabel_of_several(task: str, option: str) -> None:
    """--task multilabel names one column of label sets: with several target columns it has no column to read."""
    if task == "multilabel":
        raise UserError(f"--task multilabel reads one column of label sets; with several {option} columns each is "
                        "classified or regressed: leave --task auto, or give one column")


def one_target(data: LabeledData, command: str) -> LabeledData:
    """`command` (rank, compare) scores one target: a multi-task fit's several are refused, naming each to try alone."""
    if data.task == "multitask":
        names = [t["name"] for t in data.info["targets"]]
        raise UserError(f"{command} scores one target, and --target names {len(names)} ({', '.join(names)}): run it "
                        f"on each, e.g. --target {names[0]}")
    return data


def _counts(items: list[Item], n: int) -> list[int]:
    c = Counter(y for _, y in items)
    return [c.get(i, 0) for i in range(n)]


def _is_jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def file_hash(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


SNIFF_BYTES = 8 << 20  # enough of a file to tell its encoding


def file_encoding(path: str | Path) -> str:
    """How to decode a text file: "utf-8-sig" (UTF-8, with or without a byte-order mark); for a file whose
    non-ASCII bytes never form UTF-8 (a legacy 8-bit export: Excel on Windows writes cp1252), "cp1252", or
    "latin-1" where cp1252 leaves a byte undefined. A UTF-8 file with a few corrupt bytes stays UTF-8 (the text
    loader skips and lists those rows)."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its byte-order mark: Excel's "Unicode Text", PowerShell 5
        return "utf-16"
    if len(head) == SNIFF_BYTES:  # do not judge a character cut at the end
        head = head[: head.rfind(b"\n") + 1] or head
    try:
        head.decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError:
        pass
    decoded = head.decode("utf-8", errors="replace")
    if re.search("[^\x00-\x7f\ufffd]", decoded):  # some real UTF-8 characters: corrupt bytes, not another encoding
        return "utf-8-sig"
    try:
        head.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def csv_delimiter(path: str | Path) -> str:
    """The field separator of a CSV/TSV file: a tab for .tsv; else a comma, unless the header holds none and does hold
    semicolons or tabs (spreadsheets in locales with a decimal comma separate fields with ";")."""
    if Path(path).suffix.lower() == ".tsv":
        return "\t"
    try:
        with open(path, newline="", encoding=file_encoding(path), errors="replace") as f:
            header = f.readline()
    except OSError:
        return ","
    if "," in header:
        return ","
    return max(";\t", key=header.count) if any(c in header for c in ";\t") else ","


def value_hash(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class Modality:
    """One kind of data. Registered by name in MODALITIES; `fit` picks one with `claims` or `--modality`."""

    name: str = ""
    default_backbone: str = ""
    input_noun: str = "item"  # for progress bars and summaries ("img", "text", "clip", "row")
    decoding: str = ""  # how a file becomes the preprocessing's input, where that is not plain (export.json says it)
    options: tuple[str, ...] = ()  # the fit options that some kinds of data alone read (warn_of_unread_options)

    def claims(self, source: Path, cfg) -> bool:
        """Whether `source` looks like this modality's data (auto-detection)."""
        return False

    def hint(self, source: Path) -> str:
        """When no modality claims `source`: the options that would make this one read it ("" when it could not)."""
        return ""

    def load(self, cfg) -> LabeledData:
        """Read, clean (skip and list bad items) and split `cfg.data`."""
        raise NotImplementedError

    def load_labeled(self, source: str | Path, model) -> tuple[list[Item], list[tuple[str, str]], str]:
        """Every labeled example under `source`, targets in the saved `model`'s terms (evaluate): (items, [(where,
        why skipped)], what was scored: a split layout's test part, else its validation part, said so)."""
        raise NotImplementedError

    def collect_inputs(self, inputs: list[str], model) -> tuple[list, list[str]]:
        """Unlabeled inputs from command-line arguments (predict): (inputs, a display name for each)."""
        raise NotImplementedError

    def from_values(self, values: list, model) -> tuple[list, list[str]]:
        """Inputs given as values, never read as file names (`Run.predict_values`, `serve`'s JSON): (inputs, names)."""
        raise UserError(f"{self.name} models read files: give files, not values (serve: POST them to /predict/files)")

    def unreadable(self, inputs: list) -> dict[int, str]:
        """Of collected inputs, those that cannot be read: {position: reason} (predict answers them with the reason)."""
        return {}

    def unlabeled(self, cfg) -> LabeledData:
        """Inputs without labels (`pretrain`): what `predict` reads from `cfg.inputs`, less the unreadable (listed as
        skipped), held out by `split_unlabeled` (files: data/files.py's `unlabeled_files`)."""
        raise UserError(f"pretrain does not read {self.name} inputs yet")

    def classical_baseline(self, train: list[Item], test: list[Item], task: str) -> tuple[str, float] | None:
        """A model without transfer on the same rows (raw pixels, TF-IDF, the raw table): (name, test score)."""
        return None

    def describe_input(self, x) -> str:
        """How one input is written in predictions.csv (a path, the text, the row as JSON)."""
        return x if isinstance(x, str) else json.dumps(x, default=str)

    def preview_html(self, described: str) -> str:
        """A small HTML view of one input for report.html (thumbnails for images); `described` from describe_input."""
        import html

        return html.escape(described[:300])

    def input_key(self, x) -> str:
        """Content identity of one input, for the feature cache (a file's bytes, a text, a row)."""
        return value_hash(x)


MODALITIES: Registry[Modality] = Registry("modality")


def split_unlabeled(modality: str, inputs: list, skipped: list[tuple[str, str]], cfg) -> LabeledData:
    """Unlabeled inputs as data without classes: a random `cfg.holdout` share set aside as `val` to judge the training
    objective on, every target 0."""
    if len(inputs) < MIN_UNLABELED:
        raise UserError(f"{len(inputs)} readable input(s) in {', '.join(map(str, cfg.inputs))}: pre-training contrasts "
                        f"each input with the others of its batch and needs at least {MIN_UNLABELED}")
    order = np.random.default_rng(cfg.seed).permutation(len(inputs))
    n_val = min(len(inputs) // 2, max(2, round(cfg.holdout * len(inputs)))) if cfg.holdout > 0 else 0
    return LabeledData(modality, "classification", [], [(inputs[i], 0) for i in order[n_val:]],
                       [(inputs[i], 0) for i in order[:n_val]], [], "unlabeled inputs", skipped)


def linear_baseline(x_train, y_train, x_test, y_test, task: str) -> float | None:
    """Test score of a regularised linear model on inputs made without transfer (pixels, TF-IDF, the encoded table):
    accuracy for classification (logistic regression), R² for regression (ridge); strength by 3-fold CV where
    every class has 3 examples. None for other tasks."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import GridSearchCV

    from headstart.train.probe import RIDGE_ALPHAS

    if task == "regression":
        return float(RidgeCV(alphas=RIDGE_ALPHAS).fit(x_train, y_train).score(x_test, y_test))
    if task != "classification":
        return None
    model = LogisticRegression(C=1.0, max_iter=2000)
    if min(np.bincount(np.asarray(y_train))[np.unique(y_train)]) >= 3:
        model = GridSearchCV(model, {"C": [0.1, 1.0, 10.0]}, cv=3)
    return float(model.fit(x_train, y_train).score(x_test, y_test))


def looks_multilabel(classes: list[str], separator: str = ";") -> bool:
    """Whether class names are sets of labels joined by `separator` (--task auto): every name is joined ("red;warm",
    "blue;cool"), or some are and a name recurs across them ("cat", "dog", "cat;dog"). A single name that merely holds
    the separator beside plain ones ("R&D; sales", "marketing") stays one class."""
    combined = [c for c in classes if separator in c]
    if not combined:
        return False
    parts = Counter(p.strip() for c in classes for p in c.split(separator) if p.strip())
    return len(combined) == len(classes) or any(n >= 2 for n in parts.values())


def label_separator_of(model) -> str | None:
    """A multi-label model's separator (its labels are read back as sets), None for other tasks."""
    return model.data_options.get("label_separator", ";") if model.task.name == "multilabel" else None


def multi_hot(label: str, classes: list[str], separator: str = ";") -> tuple[list[float] | None, str]:
    """Labels joined by `separator` ("cat;dog") as a vector over `classes`, or (None, why) naming one that is not."""
    names = [n.strip() for n in str(label).split(separator) if n.strip()]
    unknown = [n for n in names if n not in classes]
    if unknown:
        return None, f"label {unknown[0]!r} is not one of the labels ({', '.join(classes)})"
    return [1.0 if c in names else 0.0 for c in classes], ""


def required_multi_hot(label: str, classes: list[str], separator: str, where: str) -> list[float]:
    """`multi_hot`, or a UserError naming `where` (a file, a row) when a label is not one of `classes` (evaluate)."""
    target, why = multi_hot(label, classes, separator)
    if target is None:
        raise UserError(f"{where}: {why}")
    return target


def as_multilabel(data: LabeledData, separator: str = ";") -> LabeledData:
    """Class names like "cat;dog" become two labels: classes are the separate names, targets multi-hot vectors."""
    names = sorted({part.strip() for c in data.classes for part in c.split(separator) if part.strip()})
    index = {n: i for i, n in enumerate(names)}

    def hot(y: int) -> list[float]:
        vec = [0.0] * len(names)
        for part in data.classes[y].split(separator):
            if part.strip():
                vec[index[part.strip()]] = 1.0
        return vec

    split = {s: [(x, hot(y)) for x, y in getattr(data, s)] for s in ("train", "val", "test")}
    return LabeledData(data.modality, "multilabel", names, split["train"], split["val"], split["test"], data.layout,
                       data.skipped, {**data.info, "label_separator": separator})


def as_regression(data: LabeledData, target: str, where: str | None = None) -> LabeledData:
    """Labels that are numbers (an image manifest's or a text file's label column) become regression targets;
    `where` (the data's path) names the data in the error for one that is not."""
    values = [label_number(c, where or f"{data.layout} data") for c in data.classes]
    split = {s: [(x, values[y]) for x, y in getattr(data, s)] for s in ("train", "val", "test")}
    return LabeledData(data.modality, "regression", [target], split["train"], split["val"], split["test"], data.layout,
                       data.skipped, data.info)


def warn_of_unread_options(cfg, modality: Modality) -> None:
    """An option that only other kinds of data read (--image-size for a text file, --target for image folders),
    given for this data, is said once: it was ignored without a word."""
    from headstart.config import flag

    defaults = type(cfg)(data="")
    readers: dict[str, list[str]] = {}
    for name in MODALITIES.names():
        for option in MODALITIES.get(name).options:
            readers.setdefault(option, []).append(name)
    for option, names in readers.items():
        if modality.name not in names and getattr(cfg, option) != getattr(defaults, option):
            warn(f"{flag(option)} applies to {' and '.join(names)} data, and {cfg.data} is "
                 f"{modality.name} data: it is not used")


def register_modality(cls: type[Modality]) -> type[Modality]:
    """Class decorator: registers one instance under `cls.name`."""
    MODALITIES.register(cls.name)(cls())
    return cls
