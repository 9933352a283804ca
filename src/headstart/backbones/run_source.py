"""`run:DIR`: the body of any earlier headstart run as the backbone of a new fit ("develop a model, then reuse it")."""
from __future__ import annotations

from pathlib import Path

from headstart.backbones.registry import SOURCES
from headstart.errors import UserError


@SOURCES.register("run")
def body_of_run(path: str, weights: str | None = None):
    from headstart.model import TransferModel  # the model module imports the backbone registry

    if weights:
        raise UserError("--weights cannot be combined with --model run:DIR (the run's weights are the body)")
    if not (Path(path) / "model" / "model.json").is_file() and not (Path(path) / "model.json").is_file():
        raise UserError(f"--model run:{path}: no headstart run there (expected {path}/model/model.json from a fit's --out)"
                        + _what_is_there(Path(path)))
    source = TransferModel.load(path)
    body = source.backbone
    body.pretrained = body_was_trained(source)
    body.source_run = str(path)
    body.source_head = {"classes": source.classes, "task": source.task.name, "head": source.head_name,
                        "state": source.head.state_dict(), "target_scale": source.task.target_scale}
    return body


def body_was_trained(source) -> bool:
    """Whether the source run trained its body. A body that starts untrained and passes its inputs through (a table's
    wide mlp) is still random after a run that only solved a head on those inputs (linear-probe): reused as trained,
    its random features joined the new head's solve (an update of such a Carseats run fell from R² 0.831 to 0.810 on
    more rows); kept untrained, the new head is solved on the inputs again."""
    notes = source.provenance or {}
    head_only = (notes.get("picked") or notes.get("strategy")) == "linear-probe"
    return not (head_only and getattr(source.backbone, "wide", False))


# Folders other commands write, which hold no model of their own: what to give instead
NOT_A_MODEL = {"rank.json": "a rank's scores", "compare.json": "a compare's curves", "lr_find.json": "an lr-find's sweep"}


def _what_is_there(path: Path) -> str:
    """Where a user pointed run: at another command's folder, what it is and where its model is, if anywhere."""
    if (path / "best" / "model" / "model.json").is_file():
        return f"; it is a tune's folder: its best trial, refit, is run:{path / 'best'}"
    made = next((what for name, what in NOT_A_MODEL.items() if (path / name).is_file()), None)
    if made:
        return f"; it holds {made}, not a model: fit first, then reuse that run's --out"
    if (path / "config.yaml").is_file():
        return "; it holds an unfinished run (a model is saved at its end; a stopped one goes on with --resume)"
    return ""


def source_head_state(backbone, head_name: str, task, classes: list[str]) -> dict | None:
    """The source run's head, when the new task is the same (classes, task, head kind): a candidate for the new
    head ("update a model with new data"). A regression head is re-expressed in the new targets' standardisation."""
    source = getattr(backbone, "source_head", None)
    if not source or source["classes"] != list(classes) or source["task"] != task.name or source["head"] != head_name:
        return None
    state = {k: v.clone() for k, v in source["state"].items()}
    if task.name == "regression":
        # out_new = (out_src * s_src + m_src - m_new) / s_new, folded into the head's last linear layer
        src, new = source["target_scale"], task.target_scale
        weights = [k for k in state if k.endswith("weight")]
        last_w, last_b = weights[-1], weights[-1][: -len("weight")] + "bias"
        state[last_w] *= src["std"] / new["std"]
        state[last_b] = (state[last_b] * src["std"] + src["mean"] - new["mean"]) / new["std"]
    return state


body_of_run.modality = None  # read from the run's model.json (see backbone_modality)
