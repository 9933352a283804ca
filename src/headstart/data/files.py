"""Labeled files, whatever they hold (images, audio clips): the layouts every file modality shares.

- split folders `DATA/{train,val,test}/<class>/*` (val may be named valid or validation);
- one folder of class folders, split here (stratified);
- a CSV manifest `path,label[,split]`, paths relative to the CSV's folder; with several `--label-column`s
  (`path,colour,size[,split]`) a target per column, a multi-task fit (`manifest_targets`).

A `FileKind` says which files belong (extensions) and how to check one fully (decode it). Unreadable files
are skipped and listed, never crash a run; no files, a single class or an empty class is one clear error.
"""
from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from headstart.data.base import LabeledData, csv_delimiter, refuse_multilabel_of_several, split_unlabeled
from headstart.data.splits import split_targets, stratified_split
from headstart.errors import UserError, warn

SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
SPLIT_ALIASES = {name: split for split, names in SPLIT_NAMES.items() for name in names} | {"": ""}

Item = tuple[str, int]  # (path, class index)


@dataclass(frozen=True)
class FileKind:
    noun: str  # plural, for messages: "images", "clips"
    extensions: frozenset[str]
    check: Callable[[str], tuple[Any, str]]  # decode one file fully: (a fact such as its size, "") or (None, reason)

    def owns(self, path: Path) -> bool:
        return path.suffix.lower() in self.extensions and not path.name.startswith(".")

    def claims(self, source: Path) -> bool:
        """Whether most files under a folder (a sample), or most paths a manifest starts with, are of this kind."""
        if source.is_file():
            if source.suffix.lower() != ".csv" or "path" not in csv_columns(source):
                return False
            paths = manifest_paths(source)
        elif source.is_dir():
            paths = first_files(source)
        else:
            return False
        return bool(paths) and sum(self.owns(p) for p in paths) > len(paths) / 2

    def hint(self, source: Path) -> str:
        """For a CSV of this kind's file paths that is no manifest yet: what its header lacks ("" otherwise)."""
        if not source.is_file() or source.suffix.lower() != ".csv":
            return ""
        with open(source, newline="", encoding="utf-8-sig", errors="replace") as f:
            rows = [row for _, row in zip(range(21), csv.reader(f, delimiter=csv_delimiter(source)))]
        if not rows:
            return ""
        if any(self.owns(Path(cell.strip())) for cell in rows[0]):
            return f"its first row is a file name, not a header: a manifest of {self.noun} starts with the row path,label"
        paths = [i for i in range(len(rows[0]))
                 if sum(len(r) > i and self.owns(Path(r[i].strip())) for r in rows[1:]) > (len(rows) - 1) / 2]
        if paths:
            return (f"for {self.noun}, name the manifest's columns path,label (found: {', '.join(rows[0])}; "
                    f"{rows[0][paths[0]]!r} holds the paths)")
        return ""


def csv_columns(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        return next(csv.reader(f, delimiter=csv_delimiter(path)), [])


def manifest_paths(path: Path, rows: int = 20) -> list[Path]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        return [Path(row.get("path") or "") for _, row in zip(range(rows), csv.DictReader(f, delimiter=csv_delimiter(path)))]


def first_files(root: Path, limit: int = 200) -> list[Path]:
    """A sample of the files under `root`: enough to tell images from audio without walking everything."""
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            found.append(p)
            if len(found) >= limit:
                break
    return found


def split_dir(root: Path, split: str) -> Path | None:
    return next((root / name for name in SPLIT_NAMES[split] if (root / name).is_dir()), None)


def is_data_folder(p: Path) -> bool:
    """A folder that can hold data: not hidden, not the resource forks a macOS zip unpacks into `__MACOSX`."""
    return p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX"


def unwrap(root: Path, kind: FileKind) -> Path:
    """The folder that holds the data: an archive often unpacks into wrappers (`flower_photos/flower_photos/daisy`,
    `dataset/data/train`), each holding one folder and none of the kind's files; read what is inside them."""
    def holds_files(folder: Path) -> bool:
        return any(p.is_file() and kind.owns(p) for p in folder.iterdir())

    while root.is_dir() and not split_dir(root, "train"):
        folders = [p for p in root.iterdir() if is_data_folder(p)]
        if len(folders) != 1 or holds_files(root) or holds_files(folders[0]):  # a lone class folder is no wrapper
            break
        root = folders[0]
    return root


def class_folder_items(root: Path, kind: FileKind, classes: list[str] | None = None,
                       train_dir: Path | None = None) -> tuple[list[Item], list[str]]:
    """The files of each class folder under `root`, labeled by folder; `classes` (a model's, or those of `train_dir`,
    the split that named them) fixes the labels, and a folder outside them is an error saying what to do."""
    dirs = sorted(d.name for d in root.iterdir() if is_data_folder(d))
    classes = classes or dirs
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for name in dirs:
        if name not in index and train_dir is not None:
            raise UserError(f"{root / name}: class {name!r} has no folder in {train_dir} (its classes: {', '.join(classes)}); "
                            f"add {train_dir / name} with training {kind.noun}, or move this folder out of {root}")
        if name not in index:
            raise UserError(f"{root / name}: class {name!r} is not one of the model's classes ({', '.join(classes)}); move "
                            "that folder out of the data to score the rest, or teach the model the class first: headstart update RUN DATA")
        items += [(str(p), index[name]) for p in sorted((root / name).rglob("*")) if p.is_file() and kind.owns(p)]
    return items, classes


def manifest_rows(csv_path: Path, label_columns: tuple[str, ...] = ("label",)) -> list[tuple[str, str, str, dict]]:
    """(where, path, split, {label column: label}) per row of a manifest: paths from the manifest's folder, split
    names as for folders ("" unsplit)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=csv_delimiter(csv_path))
        needed = ["path", *label_columns]
        if not reader.fieldnames or not set(needed) <= set(reader.fieldnames):
            raise UserError(f"{csv_path}: a manifest needs columns {','.join(needed)} (found: {', '.join(reader.fieldnames or [])})")
        rows = list(reader)
    out = []
    for row_no, row in enumerate(rows, start=2):
        split = (row.get("split") or "").strip().lower()
        if split not in SPLIT_ALIASES:
            raise UserError(f"{csv_path} row {row_no}: unknown split {split!r} (use train, val or test, or leave it empty)")
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else csv_path.parent / row["path"]
        out.append((f"{csv_path} row {row_no}", str(path), SPLIT_ALIASES[split], {c: row[c] for c in label_columns}))
    return out


def manifest_splits(csv_path: Path, classes: list[str] | None = None, read: Callable[[str, str], Any] | None = None,
                    column: str = "label") -> tuple[dict[str, list[Item]], list[str]]:
    """Manifest rows per split: "train", "val", "test", or "" (unsplit); split names as for folders. Targets are
    class indices, or `read(label, "FILE row N")` where given (base.label_reader: numbers, label sets); the labels are
    the `column` (--label-column) of each row."""
    rows = manifest_rows(csv_path, (column,))
    classes = classes or sorted({labels[column] for *_, labels in rows if labels[column]})
    index = {c: i for i, c in enumerate(classes)}
    per_split: dict[str, list[Item]] = {}
    for where, path, split, labels in rows:
        label = labels[column]
        if read is None and label not in index:
            raise UserError(f"{where}: label {label!r} is not one of the model's classes ({', '.join(classes)}); remove "
                            "the rows with it to score the rest, or teach the model the class first: headstart update RUN DATA")
        per_split.setdefault(split, []).append((path, read(label, where) if read else index[label]))
    return per_split, classes


def manifest_column(model) -> str:
    """The manifest column a fitted model's labels were read from (--label-column; `label` unless given)."""
    return (getattr(model, "data_options", {}).get("label_column") or "label").strip()


def several_label_columns(label_column: str | None) -> list[str]:
    """A manifest's label columns when --label-column names several (a multi-task fit), else [] (its `label`)."""
    names = [c.strip() for c in (label_column or "").split(",") if c.strip()]
    return names if len(names) > 1 else []


def manifest_targets(csv_path: Path, names: list[str], task: str = "auto", fitted=None) -> tuple[dict[str, list], list, list[dict]]:
    """A multi-task manifest: (items per split with a target per column, skipped rows, each column's {"name", "task",
    "classes"}); the columns' tasks and classes read from the training rows, or a fitted model's (`fitted`: its task)."""
    from headstart.data.tabular import describe_target, labeled_items, multitask_readers

    rows = manifest_rows(csv_path, tuple(names))
    if fitted is not None:
        specs, (_, readers) = fitted.target_scale["targets"], multitask_readers(fitted)
    else:
        refuse_multilabel_of_several(task, "--label-column")
        train = [labels for _, _, split, labels in rows if split in ("train", "")]
        described = [describe_target(csv_path, train, name, task, ";") for name in names]
        specs, readers = [spec for spec, _ in described], [reader for _, reader in described]
    items, skipped = labeled_items(((where, (path, split), {c: v if v.strip() else None for c, v in labels.items()})
                                    for where, path, split, labels in rows), names, readers)  # an empty cell: missing
    per_split: dict[str, list] = {}
    for (path, split), y in items:
        per_split.setdefault(split, []).append((path, y))
    return per_split, skipped, specs


def filter_readable(items: list[Item], kind: FileKind) -> tuple[list[Item], list[tuple[str, str]], list]:
    """(readable items, skipped (path, reason), the check's fact for each readable item); files checked in threads."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(kind.check, [p for p, _ in items]))
    good, skipped, facts = [], [], []
    for item, (fact, reason) in zip(items, results):
        if reason:
            skipped.append((item[0], reason))
        else:
            good.append(item)
            facts.append(fact)
    return good, skipped, facts


def _check_classes(root: Path, kind: FileKind, classes: list[str], train: list[Item], skipped: list) -> None:
    if not train:
        # the first unreadable file says why (a manifest's relative paths start at the manifest's folder)
        extra = f" ({len(skipped)} unreadable, first {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise UserError(f"{root}: no readable training {kind.noun}{extra}; expected class folders of {kind.noun} "
                        f"({', '.join(sorted(kind.extensions))}) or a CSV path,label")
    counts = [sum(1 for _, y in train if y == i) for i in range(len(classes))]
    for name, count in zip(classes, counts):
        if count == 0:
            raise UserError(f"{root}: class {name!r} has no readable training {kind.noun}; add some or remove the class")


def load_file_data(source: str | Path, kind: FileKind, modality: str, val_fraction: float, test_fraction: float,
                   seed: int, label_column: str | None = None, task: str = "auto") -> tuple[LabeledData, list]:
    """Discover the layout, drop unreadable files, split what is not split yet (stratified); also the training
    files' facts (from `kind.check`), for the modality's data summary. Several `label_column`s of a manifest are a
    multi-task fit."""
    given = Path(source)
    if not given.exists():
        raise UserError(f"data {given} does not exist")
    root = unwrap(given, kind)
    names = several_label_columns(label_column)
    if names and not root.is_file():
        raise UserError(f"--label-column {label_column}: several label columns are read from a CSV manifest "
                        f"(path,{','.join(names)}[,split]), and {given} is a folder of {kind.noun}")
    if names:
        return _load_multitask_manifest(root, given, kind, modality, names, task, val_fraction, test_fraction, seed)
    column = (label_column or "label").strip()
    if column != "label" and not root.is_file():
        warn(f"--label-column {column} names a CSV manifest's column, and {given} is a folder of {kind.noun}, whose "
             "folder names are the classes: it is not used")
    if root.is_file():
        per_split, classes = manifest_splits(root, column=column)
        train, val, test = per_split.get("train", []) + per_split.get("", []), per_split.get("val", []), per_split.get("test", [])
        layout = "manifest"
    elif split_dir(root, "train"):
        train_dir = split_dir(root, "train")
        train, classes = class_folder_items(train_dir, kind)
        val = class_folder_items(split_dir(root, "val"), kind, classes, train_dir)[0] if split_dir(root, "val") else []
        test = class_folder_items(split_dir(root, "test"), kind, classes, train_dir)[0] if split_dir(root, "test") else []
        layout = "splits"
    else:
        train, classes = class_folder_items(root, kind)
        val, test = [], []
        layout = "class-folders"

    train, skipped, facts = filter_readable(train, kind)
    val, skipped_val, _ = filter_readable(val, kind)
    test, skipped_test, _ = filter_readable(test, kind)
    _check_classes(root, kind, classes, train, skipped)
    if not test and layout != "splits":
        train, test = stratified_split(train, [y for _, y in train], test_fraction, seed)
    if not val:
        train, val = stratified_split(train, [y for _, y in train], val_fraction, seed)
    if root != given:
        layout += f" in {root.relative_to(given)}"
    data = LabeledData(modality, "classification", classes, train, val, test, layout, skipped + skipped_val + skipped_test, {})
    return data, facts


def _load_multitask_manifest(root: Path, given: Path, kind: FileKind, modality: str, names: list[str], task: str,
                             val_fraction: float, test_fraction: float, seed: int) -> tuple[LabeledData, list]:
    from headstart.tasks import MultiTask

    per_split, skipped, specs = manifest_targets(root, names, task)
    train, skipped_train, facts = filter_readable(per_split.get("train", []) + per_split.get("", []), kind)
    val, skipped_val, _ = filter_readable(per_split.get("val", []), kind)
    test, skipped_test, _ = filter_readable(per_split.get("test", []), kind)
    if not train:
        raise UserError(f"{root}: no readable, labeled training {kind.noun}")
    if not test:
        train, test = split_targets(train, test_fraction, seed, specs)
    if not val:
        train, val = split_targets(train, val_fraction, seed, specs)
    layout = "manifest" + (f" in {root.relative_to(given)}" if root != given else "")
    data = LabeledData(modality, "multitask", MultiTask.output_names(specs), train, val, test, layout,
                       skipped + skipped_train + skipped_val + skipped_test, {"targets": specs, "label_column": ",".join(names)})
    return data, facts


def load_labeled_files(source: str | Path, kind: FileKind, classes: list[str], read: Callable[[str, str], Any] | None = None,
                       fitted=None, column: str = "label") -> tuple[list[Item], list[tuple[str, str]], str]:
    """Every labeled file under `source` in a model's classes (evaluate): class folders, a split layout's test/
    (else val/), a manifest's test rows (else all of them). `read` (base.label_reader's, for a regression or
    multi-label model): a label or folder name read by it (a number, a set "cat;dog"), not as one of `classes`."""
    root = Path(source)
    if not root.exists():
        raise UserError(f"data {root} does not exist")
    root = unwrap(root, kind)
    if fitted is not None and fitted.name == "multitask":  # a multi-task model reads its label columns of a manifest
        names = [t["name"] for t in fitted.target_scale["targets"]]
        if not root.is_file():
            raise UserError(f"{source}: a multi-task model is evaluated on a CSV manifest (path,{','.join(names)}[,split])")
        per_split, bad, _ = manifest_targets(root, names, fitted=fitted)
        items, skipped, _ = filter_readable(per_split.get("test") or [it for split in per_split.values() for it in split], kind)
        if not items:
            raise UserError(f"{root}: no readable labeled {kind.noun}")
        return items, bad + skipped, f"{root}: its {'test rows' if per_split.get('test') else 'rows, every split'}"
    own = None if read else classes  # read: the data's own label strings first, then their targets
    if root.is_file():
        per_split, _ = manifest_splits(root, own, read, column)
        items = per_split.get("test") or [it for split in per_split.values() for it in split]
        scored = f"{root}: its {'test rows' if per_split.get('test') else 'rows, every split'}"
    else:
        has_split = split_dir(root, "train") and (split_dir(root, "test") or split_dir(root, "val"))
        folder = (split_dir(root, "test") or split_dir(root, "val")) if has_split else root
        items, names = class_folder_items(folder, kind, own)
        scored = f"{folder} (no test folder)" if has_split and not split_dir(root, "test") else str(folder)
        if read:  # a class folder's name, read as a manifest's label
            items = [(path, read(names[y], str(folder / names[y]))) for path, y in items]
    items, skipped, _ = filter_readable(items, kind)
    if not items:
        raise UserError(f"{root}: no readable labeled {kind.noun} (expected class folders named {', '.join(classes)})")
    return items, skipped, scored


def unreadable_files(paths: list[str], kind: FileKind) -> dict[int, str]:
    """{position: reason} for the files that do not decode (the check fit uses: truncated, corrupt, not this kind)."""
    reasons = dict(filter_readable([(p, 0) for p in dict.fromkeys(paths)], kind)[1])
    return {i: reasons[p] for i, p in enumerate(paths) if p in reasons}


def unlabeled_files(cfg, kind: FileKind, modality: str) -> tuple[LabeledData, list]:
    """`pretrain`'s files, collected as predict collects them and checked once (the unreadable skipped, with why),
    held out by `split_unlabeled`; also each readable file's fact (from `kind.check`), for the data summary."""
    files = collect_files(cfg.inputs, kind)
    good, skipped, facts = filter_readable([(f, 0) for f in files], kind)
    return split_unlabeled(modality, [f for f, _ in good], skipped, cfg), facts


def collect_files(paths: list[str | Path], kind: FileKind) -> list[str]:
    """Files named on the command line, and the files of this kind in folders named there (predict)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and kind.owns(f))
        elif p.is_file():
            files.append(str(p))
        else:
            raise UserError(f"{p} does not exist")
    if not files:
        raise UserError(f"no {kind.noun} ({', '.join(sorted(kind.extensions))}) found in {', '.join(map(str, paths))}")
    return files
