"""A run directory as an object: its model, metrics, evaluation on new data and predictions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from headstart.data import MODALITIES
from headstart.drift import ALPHA
from headstart.errors import UserError
from headstart.evaluate import fitted_rows_note
from headstart.inference import predict_outputs
from headstart.io_utils import slug, write_json
from headstart.model import TransferModel
from headstart.plots import plot_scored


ENGINES = ("torch", "onnx")
EXPORT_DIR = "export"  # where `Run.export` writes by default, and where engine="onnx" looks


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Run:
    def __init__(self, path: str | Path, model: TransferModel | None = None):
        self.path = Path(path)
        self._model = model
        self._runner = None  # the ONNX Runtime session of the run's export, opened on first use

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def model(self) -> TransferModel:
        if self._model is None:
            self._model = TransferModel.load(self.path / "model")
        return self._model

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    @property
    def metrics(self) -> dict:
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def history(self) -> list[dict]:
        """Per-epoch rows of every stage (history.csv), numbers as floats."""
        import csv

        path = self.path / "history.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: (v if k == "stage" else float(v)) for k, v in r.items() if v not in ("", None)} for r in rows]

    @property
    def modality(self):
        return MODALITIES.get(self.model.modality)

    def predict_outputs(self, inputs: list, batch_size: int = 64, engine: str = "torch", progress: bool = False) -> np.ndarray:
        """Raw inputs of the run's modality -> class probabilities [N, C] or regression values [N].

        engine="onnx" computes them with ONNX Runtime from the run's export (`Run.export`), same preprocessing.
        `progress`: a bar on stderr when the inputs take more than one batch (the CLI's predict shows it).
        """
        from headstart.progress import RunProgress

        self.require_head()
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        runner = self._onnx_runner() if engine == "onnx" else None
        bar = RunProgress(progress and len(inputs) > batch_size)
        bar.plan(len(inputs))
        bar.open("predict", total=len(inputs), unit=self.modality.input_noun)
        try:
            return predict_outputs(self.model, inputs, batch_size=batch_size, device=_device(), runner=runner,
                                   on_batch=lambda n: bar.advance(n, n))
        finally:
            bar.close()

    def require_head(self) -> None:
        """One clear error where a run has no head to predict with: a body from `pretrain`."""
        if not self.classes:
            raise UserError(f"{self.path} holds a pre-trained body (headstart pretrain) and no head to predict with: "
                            f"fit labeled data from it with --model run:{self.path}")

    predict_proba = predict_outputs  # the scikit-learn name, for classification runs

    def predict(self, inputs: list[str] | str, top_k: int = 1, engine: str = "torch", progress: bool = False) -> list[dict]:
        """Predictions for files, folders, texts or table rows (what the run's modality reads), a row per input in
        order; a file that cannot be read gets {"input": ..., "error": why} in its place."""
        self.require_head()
        args = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        xs, names = self.modality.collect_inputs([str(a) if isinstance(a, Path) else a for a in args], self.model)
        return self.predict_collected(xs, names, top_k, engine, progress)

    def predict_values(self, values: list, top_k: int = 1, engine: str = "torch") -> list[dict]:
        """Predictions for inputs given as values: texts (strings) or table rows ({column: value}); a string is never
        read as a file name (what `serve` answers for JSON). One text or row alone, or a pandas DataFrame's rows."""
        if isinstance(values, (str, dict)):
            values = [values]
        elif hasattr(values, "to_dict") and hasattr(values, "columns"):  # a DataFrame: its rows
            values = values.to_dict("records")
        xs, names = self.modality.from_values(list(values), self.model)
        if not xs:
            raise UserError("no inputs to predict")
        return self.predict_collected(xs, names, top_k, engine)

    def predict_collected(self, xs: list, names: list[str], top_k: int = 1, engine: str = "torch",
                          progress: bool = False) -> list[dict]:
        """Predictions for inputs already collected (`modality.collect_inputs`: serve counts them first)."""
        if top_k < 1:
            raise UserError(f"top_k must be at least 1 (got {top_k})")
        bad = self.modality.unreadable(xs)  # {position: reason}: answered in place, so there is one row per input
        if xs and len(bad) == len(xs):
            raise UserError(f"none of the {len(xs)} input(s) could be read (first, {names[0]}: {bad[0]})")
        good = [i for i in range(len(xs)) if i not in bad]
        outputs = self.predict_outputs([xs[i] for i in good], engine=engine, progress=progress)
        rows = iter(self.model.task.rows([names[i] for i in good], outputs, self.classes, top_k))
        return [{"input": names[i], "error": bad[i]} if i in bad else next(rows) for i in range(len(xs))]

    def export(self, out: str | Path | None = None, format: str = "onnx", opset: int | None = None, force: bool = False) -> dict:
        """The model as an ONNX graph (body + head + post-processing), checked with ONNX Runtime; default RUN/export."""
        from headstart.deploy import export_onnx

        self.require_head()
        if format != "onnx":
            raise UserError(f"unknown export format {format!r}; headstart exports onnx")
        folder = Path(out) if out else self.path / EXPORT_DIR
        spec = export_onnx(self.model, folder, opset=opset, force=force)
        self._runner = None
        return {**spec, "saved_to": str(folder)}

    def _onnx_runner(self):
        from headstart.deploy import OnnxRunner

        if self._runner is None:
            self._runner = OnnxRunner(self.path / EXPORT_DIR)
        return self._runner

    def evaluate(self, data: str | Path, save: bool = True) -> dict:
        """Metrics on any labeled data the run's modality reads; saved under `eval-<name>/` in the run."""
        items, skipped, scored = self.modality.load_labeled(data, self.model)
        preds = self.predict_outputs([x for x, _ in items])
        metrics = self.model.task.metrics([y for _, y in items], preds, self.classes)
        metrics["data"], metrics["scored"] = str(data), scored
        metrics["skipped"] = [{"where": p, "reason": r} for p, r in skipped]
        note = fitted_rows_note(self.path, data, metrics["n"]) if self.path.is_dir() else None
        if note:  # scores inflated by rows the model learned from: kept with them (metrics.json, the API)
            metrics["warning"] = note
        if save and self.path.is_dir():
            folder = self.path / f"eval-{slug(data)}"
            write_json(folder / "metrics.json", metrics)
            from headstart.predict import write_predictions

            # each scored item's true and predicted target, to look for the mistakes behind the scores
            write_predictions(folder / "predictions.csv", [self.modality.describe_input(x) for x, _ in items],
                              [y for _, y in items], preds, self.classes, self.model.task)
            plot_scored(folder, self.model.task, [y for _, y in items], preds, metrics, f": {data}")
            metrics["saved_to"] = str(folder)
        return metrics

    def monitor(self, inputs: list[str] | str, reference: list[str] | str | None = None, alpha: float = ALPHA,
                out: str | Path | None = None, save: bool = True, progress: bool = True) -> dict:
        """Whether `inputs` (what `predict` reads) have drifted from the held-out inputs the model was scored on, kept
        at fit time in model/reference.safetensors (`reference`: inputs to compare with instead); drift.py says how.
        Saved under RUN/monitor-<name>-<time>/ (monitor.json, inputs.csv, drift.png): one folder per check."""
        import time

        from headstart.drift import build_reference, check_drift, load_reference, require_reference, save_check

        self.require_head()
        if save and out and Path(out).is_dir() and any(Path(out).iterdir()):  # an earlier check's verdict is kept
            raise UserError(f"{out} already holds files; give a new --out, or leave it out for a new "
                            "RUN/monitor-<inputs>-<time> folder per check")
        xs, names, skipped = self.read_inputs(inputs)
        if reference is not None:
            ref_xs, _, _ = self.read_inputs(reference)
            ref = build_reference(*self._features(ref_xs, "reference", progress), f"given: {listed_inputs(reference)}")
        else:
            ref = require_reference(load_reference(self.path / "model"), self.path)
        features, outputs = self._features(xs, "new inputs", progress)
        task = self.model.task.name
        report = check_drift(ref, features, outputs, task, self.classes, alpha)
        distance = report.pop("distance")
        order = np.argsort(distance)[::-1]
        threshold = report["novel_threshold"]  # None: too few reference rows to tell
        report["unlike_reference"] = [{"input": names[i], "distance": round(distance[i], 4)} for i in order[:10]
                                      if threshold is not None and distance[i] > threshold]
        report.update(inputs=listed_inputs(inputs), skipped=[{"where": w, "reason": r} for w, r in skipped])
        if save and self.path.is_dir():
            folder = Path(out) if out else self.path / f"monitor-{slug(listed_inputs(inputs))}-{time.strftime('%Y%m%d-%H%M%S')}"
            predicted = [r.get("prediction", ";".join(p["label"] for p in r.get("predictions", [])))
                         for r in self.model.task.rows(names, outputs, self.classes, 1)]
            save_check(folder, report, ref, features, outputs, task, names, predicted, distance)
            report["saved_to"] = str(folder)
        return report

    def read_inputs(self, inputs) -> tuple[list, list[str], list[tuple[str, str]]]:
        """What `predict` reads from `inputs`, less the unreadable: (inputs, names, [(name, why unreadable)])."""
        args = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        xs, names = self.modality.collect_inputs([str(a) for a in args], self.model)
        bad = self.modality.unreadable(xs)
        if len(bad) == len(xs):
            raise UserError(f"none of the {len(xs)} input(s) could be read (first, {names[0]}: {bad[0]})")
        keep = [i for i in range(len(xs)) if i not in bad]
        return [xs[i] for i in keep], [names[i] for i in keep], [(names[i], bad[i]) for i in sorted(bad)]

    def _features(self, xs: list, what: str, progress: bool) -> tuple[torch.Tensor, np.ndarray]:
        from headstart.inference import features_and_outputs
        from headstart.progress import RunProgress

        bar = RunProgress(progress)
        bar.plan(len(xs))
        bar.open(f"features of the {what}", total=len(xs), unit=self.modality.input_noun)
        try:
            return features_and_outputs(self.model, xs, 64, _device(), on_batch=lambda n: bar.advance(n, n))
        finally:
            bar.close()

    def summarize(self, metrics: dict) -> str:
        return self.model.task.summarize(metrics)


def listed_inputs(inputs) -> str:
    return str(inputs) if isinstance(inputs, (str, Path)) else ", ".join(map(str, inputs))


def _runs_inside(folder: Path) -> list[Path]:
    """Runs a command's folder holds (tune's best/, rank --fit-best's fit/, compare's arms), nearest first."""
    if not folder.is_dir():
        return []
    found = [p.parent.parent for p in folder.glob("*/model/model.json")]
    found += [p.parent.parent for p in folder.glob("*/*/model/model.json")]
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def load(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "model" / "model.json").is_file() and not (path / "model.json").is_file():
        inside = _runs_inside(path)
        hint = f"; the runs in it: {', '.join(map(str, inside[:3]))}" + (" ..." if len(inside) > 3 else "") if inside else ""
        raise UserError(f"{path} is not a headstart run (no model/model.json); pass the --out folder of a fit{hint}")
    run = Run(path if (path / "model").is_dir() else path.parent)
    run.model  # noqa: B018 - load now so a broken run fails here, not at first use
    return run
