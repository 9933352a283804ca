"""Serving a run over HTTP (FastAPI): the predictions `headstart predict` gives, for clients elsewhere.

    GET  /health          {"status": "ok"}: the model is loaded and answers
    GET  /info            what the model is: modality, task, classes, backbone, input, its test metrics
    POST /predict         JSON {"inputs": [...], "top_k": 1}: texts (strings) or table rows ({column: value})
    POST /predict/files   multipart "files": images, audio clips, or CSV/TSV/Parquet/JSONL files of texts or rows

Both answer `{"predictions": [...]}`, the rows `Run.predict` returns (an unreadable file gets its "error" in place).
A string in /predict is always a text, never a file name on the server; uploads are written to a private temporary
folder and named back by their upload names. Bad input answers 400 with the one-line reason; too many inputs, 413.
One request is computed at a time (the model is shared): a request is one batch, so clients that send many inputs
per request get the throughput of `predict`.
"""
# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name classes made in create_app.
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from headstart.config import SERVE_MAX_INPUTS as MAX_INPUTS
from headstart.errors import UserError
from headstart.run import Run, load


def _fastapi():
    from importlib.util import find_spec

    try:
        import fastapi
        import pydantic
    except ImportError as err:
        raise UserError("serving needs FastAPI and uvicorn: pip install 'headstart[serve]'") from err
    if not (find_spec("python_multipart") or find_spec("multipart")):  # FastAPI reads uploads with it
        raise UserError("serving file uploads needs python-multipart: pip install 'headstart[serve]'")
    return fastapi, pydantic


def create_app(run: str | Path | Run, engine: str = "torch", max_inputs: int = MAX_INPUTS):
    """The FastAPI app that serves `run` (a run directory or a loaded Run); ASGI servers run it as they run any."""
    fastapi, pydantic = _fastapi()
    from fastapi import File, HTTPException, Query, UploadFile

    run = run if isinstance(run, Run) else load(run)
    run.require_head()
    if engine == "onnx":
        run._onnx_runner()  # no export: fail at start, with the export command, not at the first request
    elif engine != "torch":
        raise UserError(f"unknown engine {engine!r}; choose torch or onnx")
    lock = threading.Lock()

    class Values(pydantic.BaseModel):
        inputs: list[Any]
        top_k: int = 1

    app = fastapi.FastAPI(title=f"headstart: {run.path.name}", description=info(run, engine)["summary"])

    def answer(predict, n: int) -> dict:
        if n == 0:
            raise HTTPException(400, "no inputs to predict")
        if n > max_inputs:
            raise HTTPException(413, f"{n} inputs in one request; at most {max_inputs} (send them in several requests)")
        try:
            with lock:
                return {"predictions": predict()}
        except UserError as err:
            raise HTTPException(400, str(err)) from err

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    def model_info() -> dict:
        return info(run, engine)

    @app.post("/predict")
    def predict(body: Values) -> dict:
        return answer(lambda: run.predict_values(body.inputs, top_k=body.top_k, engine=engine), len(body.inputs))

    @app.post("/predict/files")
    def predict_files(files: list[UploadFile] = File(...), top_k: int = Query(1)) -> dict:
        if len(files) > max_inputs:
            raise HTTPException(413, f"{len(files)} files in one request; at most {max_inputs}")
        with tempfile.TemporaryDirectory(prefix="headstart-serve-") as folder:
            names = {}
            for i, upload in enumerate(files):
                name = upload.filename or f"file {i + 1}"
                path = Path(folder) / f"{i}{_suffix(name)}"  # the suffix says what the file is; the name stays ours
                path.write_bytes(upload.file.read())
                names[str(path)] = name
            rows = answer(lambda: run.predict(list(names), top_k=top_k, engine=engine), len(files))
        for row in rows["predictions"]:
            row["input"] = _named_back(row["input"], names)
        return rows

    return app


SCORES = ("split", "n", "accuracy", "f1_macro", "f1_micro", "map", "mae", "rmse", "r2")  # of metrics.json, for /info


def info(run: Run, engine: str = "torch") -> dict:
    """What a client needs to know of the served model."""
    model = run.model
    scored = {k: v for k, v in run.metrics.items() if k in SCORES}
    summary = (f"{model.task.name} of {model.modality} inputs by {model.backbone.name}"
               + (f" into {len(model.classes)} classes" if model.classes else ""))
    return {"run": str(run.path), "modality": model.modality, "task": model.task.name, "classes": model.classes,
            "backbone": model.backbone.name, "input": model.preprocess.describe(), "engine": engine,
            "metrics": scored, "summary": summary,
            "endpoints": {"/predict": "JSON {\"inputs\": [...], \"top_k\": 1}: texts or table rows",
                          "/predict/files": "multipart files (images, audio, or files of texts or rows), ?top_k=1"}}


def serve(run: str | Path | Run, host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
          max_inputs: int = MAX_INPUTS) -> None:
    """`headstart serve`: answer predictions over HTTP until interrupted (uvicorn)."""
    app = create_app(run, engine=engine, max_inputs=max_inputs)
    try:
        import uvicorn
    except ImportError as err:
        raise UserError("serving needs uvicorn: pip install 'headstart[serve]'") from err
    print(f"headstart: serving {app.title} on http://{host}:{port} (docs at /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")


def _suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def _named_back(described: str, names: dict[str, str]) -> str:
    """A row's input as the client named it: the temporary path (and "path:row N" of a table or text file) renamed."""
    for path, name in names.items():
        if described == path or described.startswith(path + ":"):
            return name + described[len(path):]
    return described
