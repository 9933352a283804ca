"""What the new head predicts: classes (softmax, cross-entropy) or numbers (regression), registered by name.

A task owns everything that differs between them: output size, loss, the convex solve of a linear head,
what a prediction is, metrics and their one-line summary. Regression targets are standardised with the
training mean/std (stored with the model) so one learning rate fits any target scale.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from headstart.evaluate import classification_metrics, multilabel_metrics, per_class_table, regression_metrics
from headstart.registry import Registry
from headstart.train.probe import fit_logistic_head, fit_one_vs_rest_head, fit_ridge_head

TASKS: Registry = Registry("task")


class Task:
    """What every task shares: a prediction is its `postprocess` (torch ops, so an ONNX export carries it) as numpy."""

    select_by_score = True  # the best epoch replaces the starting head only with a higher validation score (BestWeights)

    def predictions(self, out: torch.Tensor) -> np.ndarray:
        return self.postprocess(out).cpu().numpy()


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    score_name = "acc"  # logged as val_acc

    def __init__(self, target_scale: dict | None = None):
        self.target_scale = None
        self.class_weights: torch.Tensor | None = None  # --balance weights: inverse class frequency

    def balance(self, targets, n_classes: int) -> list[float]:
        counts = np.bincount(np.asarray(list(targets)), minlength=n_classes).astype(float)
        weights = counts.sum() / (n_classes * np.maximum(counts, 1))
        self.class_weights = torch.as_tensor(weights, dtype=torch.float32)
        return [round(float(w), 4) for w in weights]

    def n_outputs(self, classes: list[str]) -> int:
        return len(classes)

    def targets(self, values) -> torch.Tensor:
        return torch.as_tensor(list(values), dtype=torch.long)

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(out.device)
        return F.cross_entropy(out.float(), y, weight=weight, label_smoothing=label_smoothing)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.argmax(1) == y).float().mean()

    def solve_head(self, layer, feats: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        balanced = self.class_weights is not None
        return {"solver": "logistic regression (scikit-learn lbfgs)" + (", balanced class weights" if balanced else ""),
                **fit_logistic_head(layer, feats, y, seed, class_weight="balanced" if balanced else None)}

    output_name = "probabilities"

    def postprocess(self, out: torch.Tensor) -> torch.Tensor:
        """Raw head outputs -> what a prediction is, in torch ops only (so an export carries it too)."""
        return torch.softmax(out.float(), dim=1)

    def metrics(self, y_true, preds: np.ndarray, classes: list[str]) -> dict:
        return classification_metrics(np.asarray(y_true), preds, classes)

    def summarize(self, m: dict) -> str:
        shown = m.get("macro_classes", len(m["classes"]))
        over = f", macro over the {shown} of {len(m['classes'])} classes scored or predicted" if shown < len(m["classes"]) else ""
        return (f"accuracy {m['accuracy']:.4f}  precision {m['precision_macro']:.4f}  "
                f"recall {m['recall_macro']:.4f}  F1 {m['f1_macro']:.4f}  (n={m['n']}{over})\n{per_class_table(m)}")

    def rows(self, names: list[str], preds: np.ndarray, classes: list[str], top_k: int) -> list[dict]:
        k = max(1, min(top_k, len(classes)))
        order = np.argsort(-preds, axis=1)[:, :k]
        return [{"input": name, "predictions": [{"label": classes[j], "probability": round(float(p[j]), 6)} for j in idx]}
                for name, p, idx in zip(names, preds, order)]


@TASKS.register("regression")
class Regression(Task):
    name = "regression"
    score_name = "mae"
    select_by_score = False  # the lower loss decides (the MAE is a loss too: lower is better)

    def __init__(self, target_scale: dict | None = None):
        self.target_scale = target_scale or {"mean": 0.0, "std": 1.0}

    def fit_scale(self, values) -> dict:
        v = np.asarray(list(values), dtype=np.float64)
        self.target_scale = {"mean": float(v.mean()), "std": float(v.std()) or 1.0}
        return self.target_scale

    def n_outputs(self, classes: list[str]) -> int:
        return 1

    def targets(self, values) -> torch.Tensor:
        s = self.target_scale
        return (torch.as_tensor(list(values), dtype=torch.float32) - s["mean"]) / s["std"]

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        # Huber on standardised targets: MSE near the answer, robust to a few wild rows.
        return F.huber_loss(out.float().squeeze(1), y)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.float().squeeze(1) - y).abs().mean() * self.target_scale["std"]

    def solve_head(self, layer, feats: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        return {"solver": "ridge regression (scikit-learn RidgeCV)", **fit_ridge_head(layer, feats, y)}

    output_name = "values"

    def postprocess(self, out: torch.Tensor) -> torch.Tensor:
        s = self.target_scale
        return out.float().squeeze(1) * s["std"] + s["mean"]

    def metrics(self, y_true, preds: np.ndarray, classes: list[str]) -> dict:
        return regression_metrics(np.asarray(y_true, dtype=np.float64), preds, classes[0] if classes else "target")

    def summarize(self, m: dict) -> str:
        return f"R² {m['r2']:.4f}  MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}  (n={m['n']}, target {m['target']})"

    def rows(self, names: list[str], preds: np.ndarray, classes: list[str], top_k: int) -> list[dict]:
        return [{"input": name, "prediction": round(float(p), 6)} for name, p in zip(names, preds)]


@TASKS.register("multilabel")
class MultiLabel(Task):
    """Any number of labels per example: one sigmoid per class, binary cross-entropy, threshold 0.5."""

    name = "multilabel"
    score_name = "f1"  # micro F1 at 0.5, logged as val_f1
    threshold = 0.5

    def __init__(self, target_scale: dict | None = None):
        self.target_scale = None
        self.class_weights = None

    def balance(self, targets, n_classes: int) -> list[float]:
        y = torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in targets])
        pos = y.sum(0).clamp(min=1)
        self.class_weights = (len(y) - pos) / pos  # BCE pos_weight: rare labels count more
        return [round(float(w), 4) for w in self.class_weights]

    def n_outputs(self, classes: list[str]) -> int:
        return len(classes)

    def targets(self, values) -> torch.Tensor:
        rows = [torch.as_tensor(v, dtype=torch.float32) for v in values]
        return torch.stack(rows) if rows else torch.empty(0, 0)  # a refit on train + val has no validation rows

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        y = y.float() * (1 - label_smoothing) + 0.5 * label_smoothing
        pos_weight = None if self.class_weights is None else self.class_weights.to(out.device)
        return F.binary_cross_entropy_with_logits(out.float(), y, pos_weight=pos_weight)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred = (out.float() > 0).float()
        tp = (pred * y).sum()
        return 2 * tp / (pred.sum() + y.sum()).clamp(min=1)

    def solve_head(self, layer, feats: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        return {"solver": "one-vs-rest logistic regression (scikit-learn)", **fit_one_vs_rest_head(layer, feats, y, seed)}

    output_name = "probabilities"

    def postprocess(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out.float())

    def metrics(self, y_true, preds: np.ndarray, classes: list[str]) -> dict:
        return multilabel_metrics(np.stack([np.asarray(t) for t in y_true]), preds, classes, self.threshold)

    def summarize(self, m: dict) -> str:
        return (f"micro F1 {m['f1_micro']:.4f}  macro F1 {m['f1_macro']:.4f}  mAP {m['map']:.4f}  (n={m['n']})\n"
                f"{per_class_table(m)}")

    def rows(self, names: list[str], preds: np.ndarray, classes: list[str], top_k: int) -> list[dict]:
        k = max(1, min(top_k, len(classes)))
        rows = []
        for name, p in zip(names, preds):
            order = np.argsort(-p)
            rows.append({"input": name, "labels": [classes[j] for j in order if p[j] >= self.threshold],
                         "predictions": [{"label": classes[j], "probability": round(float(p[j]), 6)} for j in order[:k]]})
        return rows


@TASKS.register("multitask")
class MultiTask(Task):
    """Several targets of one example (a table's price and category) from one body: a head per target, side by side
    as blocks of one output layer (a linear head's blocks are exactly separate linear heads), each target's own task
    doing its part (loss, solve, prediction, metrics) on its block; the loss is their sum.

    Targets arrive as one row per example, [value of target 1, value of target 2, ...] (a class index or a number);
    `target_scale` is the saved state: {"targets": [{"name", "task", "classes", "target_scale"}, ...]}.
    """

    name = "multitask"
    score_name = "error"  # the mean over targets of 1 - accuracy, or the MAE in the target's standard deviations
    select_by_score = False  # the validation loss (their sum) decides
    output_name = "outputs"

    def __init__(self, target_scale: dict | None = None):
        self.parts, start = [], 0
        for spec in (target_scale or {}).get("targets", []):
            task = make_task(spec["task"], spec.get("target_scale"))
            width = task.n_outputs(spec.get("classes") or [spec["name"]])
            self.parts.append({"name": spec["name"], "task": task, "classes": list(spec.get("classes") or []),
                               "block": slice(start, start + width)})
            start += width

    @property
    def target_scale(self) -> dict:
        return {"targets": [{"name": p["name"], "task": p["task"].name, "classes": p["classes"],
                             "target_scale": p["task"].target_scale} for p in self.parts]}

    @staticmethod
    def output_names(targets: list[dict]) -> list[str]:
        """One name per output: "target=class" for a class, the target's name for a number."""
        return [name for t in targets
                for name in ([f"{t['name']}={c}" for c in t["classes"]] if t["task"] == "classification" else [t["name"]])]

    def fit_scale(self, values) -> dict:
        rows = list(values)
        for j, part in enumerate(self.parts):
            if part["task"].name == "regression":
                part["task"].fit_scale(row[j] for row in rows)
        return self.target_scale

    def n_outputs(self, classes: list[str]) -> int:
        return self.parts[-1]["block"].stop if self.parts else 0

    def targets(self, values) -> torch.Tensor:
        rows = list(values)
        if not rows:
            return torch.empty(0, len(self.parts))
        columns = [part["task"].targets(row[j] for row in rows).float() for j, part in enumerate(self.parts)]
        return torch.stack(columns, dim=1)

    def _column(self, y: torch.Tensor, j: int) -> torch.Tensor:
        """Target j's column, in its task's dtype (class indices are long)."""
        return y[:, j].long() if self.parts[j]["task"].name == "classification" else y[:, j]

    def _each(self, out: torch.Tensor, y: torch.Tensor):
        """Per target: its task, its block of outputs, its column of targets."""
        for j, part in enumerate(self.parts):
            yield part["task"], out[:, part["block"]], self._column(y, j)

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return sum(task.loss(block, column, label_smoothing) for task, block, column in self._each(out, y))

    def score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        errors = [1 - task.score(block, column) if task.name == "classification"
                  else (block.float().squeeze(1) - column).abs().mean() for task, block, column in self._each(out, y)]
        return torch.stack(errors).mean()

    def solve_head(self, layer, feats: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        """Each target's block solved by its own task (logistic or ridge regression) on the same features."""
        from torch import nn

        solved = {}
        for j, part in enumerate(self.parts):
            block = nn.Linear(layer.in_features, part["block"].stop - part["block"].start).double()
            solved[part["name"]] = part["task"].solve_head(block, feats, self._column(y, j), seed)
            with torch.no_grad():
                layer.weight[part["block"]] = block.weight.to(layer.weight.dtype)
                layer.bias[part["block"]] = block.bias.to(layer.bias.dtype)
        return {"solver": "a solve per target", "targets": solved}

    def postprocess(self, out: torch.Tensor) -> torch.Tensor:
        """Each block's prediction side by side: a class's probability, a number in the target's units."""
        parts = [part["task"].postprocess(out[:, part["block"]]) for part in self.parts]
        return torch.cat([p if p.dim() == 2 else p.unsqueeze(1) for p in parts], dim=1)

    def _blocks(self, preds: np.ndarray):
        for part in self.parts:
            block = preds[:, part["block"]]
            yield part, (block[:, 0] if part["task"].name == "regression" else block)

    def metrics(self, y_true, preds: np.ndarray, classes: list[str]) -> dict:
        rows = [list(y) for y in y_true]
        per_target = {part["name"]: part["task"].metrics([row[j] for row in rows], block, part["classes"] or [part["name"]])
                      for j, (part, block) in enumerate(self._blocks(preds))}
        return {"n": len(rows), "targets": per_target}

    def summarize(self, m: dict) -> str:
        return "\n".join(f"[{part['name']}] {part['task'].summarize(m['targets'][part['name']])}" for part in self.parts)

    def rows(self, names: list[str], preds: np.ndarray, classes: list[str], top_k: int) -> list[dict]:
        per_target = {part["name"]: part["task"].rows(names, block, part["classes"], top_k) for part, block in self._blocks(preds)}
        return [{"input": name, "targets": {t: {k: v for k, v in rows[i].items() if k != "input"} for t, rows in per_target.items()}}
                for i, name in enumerate(names)]


def make_task(name: str, target_scale: dict | None = None):
    return TASKS.get(name)(target_scale)


def task_of(data) -> Task:
    """The task a LabeledData asks for: a multi-task's targets come from the data (`info["targets"]`)."""
    return make_task(data.task, {"targets": data.info["targets"]} if data.task == "multitask" else None)
