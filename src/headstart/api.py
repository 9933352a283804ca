"""The Python API, with the CLI's names: fit, load, models, pretrain, export, serve, monitor, update
(evaluate/predict are Run methods)."""
from __future__ import annotations

from pathlib import Path

from headstart.config import SERVE_MAX_INPUTS
from headstart.fitting import fit
from headstart.pretraining import pretrain
from headstart.run import Run, load
from headstart.select.compare import compare
from headstart.select.rank import rank
from headstart.tuning import lr_find, tune
from headstart.updating import update


def export(run: str | Path | Run, out: str | Path | None = None, format: str = "onnx", opset: int | None = None,
           force: bool = False) -> dict:
    """`headstart export`: a run's model as an ONNX graph checked with ONNX Runtime (default RUN/export/)."""
    return (run if isinstance(run, Run) else load(run)).export(out, format=format, opset=opset, force=force)


def serve(run: str | Path | Run, host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
          max_inputs: int = SERVE_MAX_INPUTS) -> None:
    """`headstart serve`: the run's predictions over HTTP (FastAPI + uvicorn) until interrupted; `create_app` in
    headstart.deploy.serve gives the app itself, for any ASGI server."""
    from headstart.deploy.serve import serve as serve_run

    serve_run(run, host=host, port=port, engine=engine, max_inputs=max_inputs)


def monitor(run: str | Path | Run, inputs: list[str] | str, reference: list[str] | str | None = None,
            alpha: float = 0.05, out: str | Path | None = None) -> dict:
    """`headstart monitor`: have `inputs` drifted from the held-out data the run was scored on? (`Run.monitor`)"""
    return (run if isinstance(run, Run) else load(run)).monitor(inputs, reference=reference, alpha=alpha, out=out)


def models() -> list[dict]:
    """The registered backbones: name, modality, parameter count (body only), input, offline?, source."""
    from headstart.backbones import BACKBONES

    rows = []
    for name in BACKBONES.names():
        info = BACKBONES.get(name)
        body = info.create(None)
        rows.append({"name": name, "modality": info.modality, "params": sum(p.numel() for p in body.parameters()),
                     "input": body.preprocess.describe(), "offline": info.offline, "source": info.source})
    return rows


__all__ = ["compare", "export", "fit", "load", "lr_find", "models", "monitor", "pretrain", "rank", "Run", "serve", "tune",
           "update"]
