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
        raise UserError(f"--model run:{path}: no headstart run there (expected {path}/model/model.json from a fit's --out)")
    source = TransferModel.load(path)
    body = source.backbone
    body.pretrained = True  # trained by the source run
    body.source_run = str(path)
    return body


body_of_run.modality = None  # read from the run's model.json (see backbone_modality)
