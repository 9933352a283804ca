"""Predictions as JSON or CSV: top-k classes with probabilities, or a value per input (regression)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from headstart.io_utils import write_text


def format_rows(rows: list[dict], fmt: str) -> str:
    """JSON as the rows are, or CSV: a row per input, its cells empty and an `error` column (present only when an
    input could not be read) saying why."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")  # printed to a terminal or a pipe, not written as a Windows file
    errors = ["error"] if any("error" in r for r in rows) else []
    read = [r for r in rows if "error" not in r]
    if read and "targets" in read[0]:
        return _multitask_csv(rows, read[0]["targets"], errors)
    if read and "prediction" in read[0]:
        writer.writerow(["input", "prediction"] + errors)
        writer.writerows([r["input"], r.get("prediction", "")] + ([r.get("error", "")] if errors else []) for r in rows)
        return buf.getvalue()
    k = max((len(r["predictions"]) for r in read), default=1)
    labels = ["labels"] if read and "labels" in read[0] else []  # multi-label: the set predicted, then the top k
    writer.writerow(["input"] + labels + [f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "probability")] + errors)
    for r in rows:
        cells = [v for p in r.get("predictions", []) for v in (p["label"], p["probability"])]
        writer.writerow([r["input"]] + ([";".join(r.get("labels", []))] if labels else []) + cells
                        + [""] * (2 * k - len(cells)) + ([r.get("error", "")] if errors else []))
    return buf.getvalue()


def _multitask_csv(rows: list[dict], first: dict, errors: list[str]) -> str:
    """A column per target: its value, or its most likely class and that class's probability."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["input"]
    for name, answer in first.items():
        header += [name] if "prediction" in answer else [name, f"{name}_probability"]
    writer.writerow(header + errors)
    for r in rows:
        cells = []
        for name, answer in first.items():
            got = r.get("targets", {}).get(name, {})
            if "prediction" in answer:
                cells.append(got.get("prediction", ""))
            else:
                top = got.get("predictions", [{}])[0]
                cells += [top.get("label", ""), top.get("probability", "")]
        writer.writerow([r["input"]] + cells + ([r.get("error", "")] if errors else []))
    return buf.getvalue()


def write_predictions(path: Path, names: list[str], targets: list, preds: np.ndarray, classes: list[str], task) -> None:
    """The scored rows' predictions: input, true, predicted (+ confidence for classes; a multi-task's pair per target),
    for the report and evaluate's folder."""
    if task.name == "multitask":
        return write_text(path, _multitask_predictions(names, targets, preds, task))
    buf = io.StringIO()
    writer = csv.writer(buf)
    if task.name == "classification":
        writer.writerow(["input", "true", "predicted", "confidence"])
        for name, y, p in zip(names, targets, preds):
            writer.writerow([name, classes[y], classes[int(p.argmax())], round(float(p.max()), 6)])
    elif task.name == "multilabel":
        writer.writerow(["input", "true", "predicted"])
        for name, y, p in zip(names, targets, preds):
            writer.writerow([name, ";".join(c for c, t in zip(classes, y) if t), ";".join(c for c, q in zip(classes, p) if q >= 0.5)])
    else:
        writer.writerow(["input", "true", "predicted"])
        writer.writerows([name, y, round(float(p), 6)] for name, y, p in zip(names, targets, preds))
    write_text(path, buf.getvalue())


def _multitask_predictions(names: list[str], targets: list, preds: np.ndarray, task) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["input"]
    for part in task.parts:
        header += [f"{part['name']}_true", f"{part['name']}_predicted"] + (
            [f"{part['name']}_confidence"] if part["task"].name == "classification" else [])
    writer.writerow(header)
    for name, y, p in zip(names, targets, preds):
        cells = []
        for j, part in enumerate(task.parts):
            block = p[part["block"]]
            if part["task"].name == "classification":
                cells += [part["classes"][int(y[j])], part["classes"][int(block.argmax())], round(float(block.max()), 6)]
            else:
                cells += [y[j], round(float(block[0]), 6)]
        writer.writerow([name] + cells)
    return buf.getvalue()
