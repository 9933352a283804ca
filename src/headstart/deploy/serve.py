"""Serving a run over HTTP (FastAPI): the predictions `headstart predict` gives, for clients elsewhere.

    GET  /health          {"status": "ok"}: the model is loaded and answers
    GET  /info            what the model is: modality, task, classes (or target), columns of rows, backbone, metrics
    POST /predict         JSON {"inputs": [...], "top_k": 1}: texts (strings) or table rows ({column: value})
    POST /predict/files   multipart "files": images, audio clips, or CSV/TSV/Parquet/JSONL files of texts or rows

Both answer `{"predictions": [...]}`, the rows `Run.predict` returns (an unreadable file gets its "error" in place),
and `"warnings": [...]` where reading the inputs warned (a table cell read as missing, or clipped).
A string in /predict is always a text, never a file name on the server; uploads are written to a private temporary
folder and named back by their upload names, in errors too. Bad input, malformed JSON included, answers 400 with the
one-line reason; too many inputs (the rows of uploaded files counted), 413.
One request is computed at a time (the model is shared): a request is one batch, so clients that send many inputs
per request get the throughput of `predict`.
"""
# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name classes made in create_app.
import errno
import re
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from headstart.config import SERVE_MAX_INPUTS as MAX_INPUTS
from headstart.errors import UserError, collecting_warnings
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
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

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

    @app.exception_handler(RequestValidationError)
    def invalid(request, err: RequestValidationError):  # pydantic's list of problems, as HTTPException's one line
        return JSONResponse({"detail": _reason(err.errors())}, status_code=400)

    def check(top_k: int) -> None:
        if top_k < 1:
            raise HTTPException(400, f"top_k must be at least 1 (got {top_k})")

    def answer(predict, n: int, named=str, counted: str = "", warned=()) -> dict:
        """The rows, and "warnings" where reading the inputs warned (a cell read as missing or clipped): the
        client never sees the server's log."""
        if n == 0:
            raise HTTPException(400, "no inputs to predict")
        if n > max_inputs:
            raise HTTPException(413, f"{n} inputs in one request{counted}; at most {max_inputs} "
                                     "(send them in several requests)")
        try:
            with lock, collecting_warnings() as warnings:
                rows = predict()
        except UserError as err:
            raise HTTPException(400, named(str(err))) from err
        warnings = [named(w) for w in [*warned, *warnings]]
        return {"predictions": rows, **({"warnings": warnings} if warnings else {})}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    def model_info() -> dict:
        return info(run, engine)

    @app.post("/predict")
    def predict(body: Values) -> dict:
        check(body.top_k)
        return answer(lambda: run.predict_values(body.inputs, top_k=body.top_k, engine=engine), len(body.inputs))

    @app.post("/predict/files")
    def predict_files(files: list[UploadFile] = File(...), top_k: int = Query(1)) -> dict:
        check(top_k)
        if len(files) > max_inputs:
            raise HTTPException(413, f"{len(files)} files in one request; at most {max_inputs}")
        with tempfile.TemporaryDirectory(prefix="headstart-serve-") as folder:
            names = {}
            for i, upload in enumerate(files):
                name = upload.filename or f"file {i + 1}"
                path = Path(folder) / f"{i}{_suffix(name)}"  # the suffix says what the file is; the name stays ours
                path.write_bytes(upload.file.read())
                names[str(path)] = name

            def named(text: str) -> str:
                return _named_back(text, names)

            try:  # what run.predict reads (each row of a table or text file), to count before predicting any
                with collecting_warnings() as warned:
                    xs, inputs = run.modality.collect_inputs(list(names), run.model)
            except UserError as err:
                raise HTTPException(400, named(str(err))) from err
            rows = answer(lambda: run.predict_collected(xs, inputs, top_k, engine), len(xs), named,
                          " (each row of an uploaded file counts)", warned)
        for row in rows["predictions"]:
            row.update({k: named(row[k]) for k in ("input", "error") if k in row})
        return rows

    return app


SCORES = ("split", "n", "accuracy", "f1_macro", "f1_micro", "map", "mae", "rmse", "r2")  # of metrics.json, for /info


def info(run: Run, engine: str = "torch") -> dict:
    """What a client needs to know of the served model."""
    model = run.model
    scored = {k: v for k, v in run.metrics.items() if k in SCORES}
    if "targets" in run.metrics:  # a multi-task run's scores, per target
        scored["targets"] = {t: {k: v for k, v in m.items() if k in SCORES} for t, m in run.metrics["targets"].items()}
    if model.task.name == "regression":  # its one "class" is the target column's name
        predicts = {"target": model.classes[0] if model.classes else "target"}
        into = f", predicting {predicts['target']}"
    elif model.task.name == "multitask":  # a head per target
        predicts = {"targets": [{"name": t["name"], "task": t["task"], **({"classes": t["classes"]} if t["classes"] else {})}
                                for t in model.task.target_scale["targets"]]}
        into = ", predicting " + ", ".join(t["name"] for t in predicts["targets"])
    else:
        predicts = {"classes": model.classes}
        into = f" into {len(model.classes)} classes" if model.classes else ""
    if model.modality == "tabular":  # the columns a row must hold (others are ignored)
        predicts["columns"] = [{"name": c["name"], "type": c["type"]} for c in model.preprocess.columns or []]
    return {"run": str(run.path), "modality": model.modality, "task": model.task.name, **predicts,
            "backbone": model.backbone.name, "input": model.preprocess.describe(), "engine": engine,
            "metrics": scored,
            "summary": f"{model.task.name} of {model.modality} inputs by {model.backbone.name}{into}",
            "endpoints": {"/predict": "JSON {\"inputs\": [...], \"top_k\": 1}: texts or table rows",
                          "/predict/files": "multipart files (images, audio, or files of texts or rows), ?top_k=1"}}


def serve(run: str | Path | Run, host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
          max_inputs: int = MAX_INPUTS) -> None:
    """`headstart serve`: answer predictions over HTTP until interrupted (uvicorn)."""
    _check_port(host, port)  # before loading the model, and before saying it is served
    app = create_app(run, engine=engine, max_inputs=max_inputs)
    try:
        import uvicorn
    except ImportError as err:
        raise UserError("serving needs uvicorn: pip install 'headstart[serve]'") from err
    print(f"headstart: serving {app.title} on http://{host}:{port} (docs at /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")


def _check_port(host: str, port: int) -> None:
    """Fail in one line where uvicorn would fail after the "serving" line, with its log: bind as it does, let go."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # uvicorn's choice
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closing connection is no owner
        try:
            probe.bind((host, port))
        except (OSError, OverflowError) as err:  # OverflowError: a port past 65535
            if getattr(err, "errno", None) == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use: pass --port N") from err
            why = getattr(err, "strerror", None) or err
            raise UserError(f"cannot listen on {host}:{port} ({why}): pass another --host or --port") from err


FIELDS = {  # what a request's field must be, in a client's words rather than pydantic's types
    "body": 'a JSON object {"inputs": [...], "top_k": 1}, sent with content-type application/json',
    "inputs": "a list of texts or table rows ({column: value} objects)",
    "top_k": "a whole number, at least 1",
    "files": 'one or more files, as multipart form fields named "files"',
}


def _reason(errors: list[dict]) -> str:
    """The first of pydantic's validation errors as one line: where, and what to send instead."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc") or ("body",)]
    if first.get("type") == "json_invalid":
        return f"body: not valid JSON ({first.get('ctx', {}).get('error', first.get('msg'))})"
    field = next((p for p in reversed(loc) if p in FIELDS), None)
    where = ".".join(loc[:loc.index(field) + 1] if field else loc)
    if field is None:
        return f"{where}: {first.get('msg', 'invalid')}"
    return f"{where}: {'missing; send' if first.get('type') == 'missing' else 'must be'} {FIELDS[field]}"


def _suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def _named_back(text: str, names: dict[str, str]) -> str:
    """`text` (a row's input, an error) with each temporary path renamed to its upload name, wherever it stands
    ("path:row 2", "path row 4", "cannot identify image file 'path'"); the longest first: 1 is in 10.csv."""
    if not names:
        return text
    paths = "|".join(re.escape(p) for p in sorted(names, key=len, reverse=True))
    return re.sub(paths, lambda m: names[m.group()], str(text))
