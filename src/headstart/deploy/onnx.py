"""ONNX export of a run's model, checked against PyTorch with ONNX Runtime before it is kept.

The exported graph is the whole prediction: body, head and the task's post-processing (softmax, sigmoid, or
the regression target's scale), so ONNX Runtime's output is the prediction itself. Preprocessing (decode,
resize and normalise; tokenise; encode columns; resample) stays outside the graph and is described in
`export.json`; text exports carry their tokenizer files beside the graph. The opset written is the one asked for
(below torch's 18, onnx's conversion of its graph) or nothing is written, and export.json records it.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from headstart.data import MODALITIES
from headstart.errors import UserError
from headstart.io_utils import temporary_folder

ONNX_FILE, SPEC_FILE = "model.onnx", "export.json"
TOLERANCE = 1e-4  # max abs difference of ONNX Runtime's predictions from PyTorch's (probabilities or target units)
LARGE_MODEL_BYTES = 1.5e9  # protobuf's 2 GB limit: bigger weights go to an external data file beside the graph
TENSOR_INPUT = "input"  # the input's name when the body takes one tensor (images, spectrograms, table rows)
EXPORTER_OPSET = 18  # torch's exporter writes opset 18 and up; an older opset is a conversion of that graph


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401 - torch's ONNX exporter translates the graph with it
    except ImportError as err:
        raise UserError(f"ONNX export needs onnx, onnxscript and onnxruntime ({err.name} is missing): "
                        "pip install 'headstart[export]'") from None
    return onnxruntime


class _Prediction(nn.Module):
    """The model's prediction from positional tensors, as an exporter wants them."""

    def __init__(self, model, names: list[str] | None):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        x = dict(zip(self.names, tensors)) if self.names else tensors[0]
        return self.model.task.postprocess(self.model(x))


def _as_named(batch) -> tuple[list[str], list[torch.Tensor], bool]:
    """A collated batch as (names, tensors, was_dict)."""
    if isinstance(batch, dict):
        return list(batch), list(batch.values()), True
    return [TENSOR_INPUT], [batch], False


def _is_sequence(t: torch.Tensor) -> bool:
    """Integer [batch, length] inputs are token ids and masks: their length varies from batch to batch."""
    return t.dim() == 2 and not t.is_floating_point()


def _dynamic_axes(tensors: list[torch.Tensor]) -> tuple:
    """Batch size is free for every input; so is the length of sequences."""
    batch, tokens = torch.export.Dim("batch", min=1, max=1 << 16), torch.export.Dim("tokens", min=1, max=1 << 16)
    return (tuple({0: batch, 1: tokens} if _is_sequence(t) else {0: batch} for t in tensors),)


def onnx_providers(available: list[str], gpu: bool) -> list[str]:
    """ONNX Runtime's execution providers, best first: CUDA where the onnxruntime-gpu build offers it and a GPU is
    present (TensorRT is left out: it compiles engines for minutes on first use), the CPU always as the fallback."""
    return (["CUDAExecutionProvider"] if gpu and "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class OnnxRunner:
    """Runs an exported graph on collated batches (torch in, torch out), as `map_batches` calls a model."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        ort = _require_onnx()
        folder = Path(folder)
        spec_path = folder / SPEC_FILE
        if not spec_path.is_file():  # Run reads RUN/export only: an export to --out elsewhere is never found
            raise UserError(f"--engine onnx reads the export in {folder}, and it has none ({SPEC_FILE} missing; "
                            "an export written with --out elsewhere is not used): "
                            f"run `headstart export {folder.parent}` without --out")
        self.spec = json.loads(spec_path.read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        providers = onnx_providers(ort.get_available_providers(), torch.cuda.is_available())
        self.session = ort.InferenceSession(str(folder / self.spec["file"]), options, providers=providers)
        self.provider = self.session.get_providers()[0]  # what ONNX Runtime actually took
        self.names = [i["name"] for i in self.spec["inputs"]]

    def __call__(self, batch) -> torch.Tensor:
        names, tensors, _ = _as_named(batch)
        feeds = {n: np.ascontiguousarray(t.cpu().numpy()) for n, t in zip(names, tensors) if n in self.names}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def _max_difference(wrapper: _Prediction, runner: OnnxRunner, backbone) -> float:
    """Largest gap between PyTorch and ONNX Runtime on fresh batches of other sizes than the traced one."""
    worst = 0.0
    for n in (1, 3):
        batch = backbone.example_batch(n)
        _, tensors, _ = _as_named(batch)
        with torch.no_grad():
            expected = wrapper(*tensors).numpy()
        worst = max(worst, float(np.abs(runner(batch).numpy() - expected).max()))
    return worst


def _first_line(err: Exception, reason: bool = False) -> str:
    """An error's first line; reason: only what follows "... failed:" (onnx's and ONNX Runtime's say where first)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (re.sub(r"^.*? failed: ?", "", text) if reason else text)[:200]


def _opset_of(path: Path) -> int:
    """The ONNX (default domain) opset a graph file declares."""
    import onnx

    imports = onnx.load(str(path), load_external_data=False).opset_import
    return next(o.version for o in imports if o.domain in ("", "ai.onnx"))


def _convert(path: Path, opset: int, large: bool, name: str) -> None:
    """Rewrite the graph at `path` in an older opset with onnx's converter (torch's own conversion drops the weights
    before converting, so fails on more graphs, and logs a traceback when it does)."""
    import onnx
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(onnx.load(str(path)), opset)
    except Exception as err:
        raise UserError(f"onnx cannot convert {name}'s graph to opset {opset} ({_first_line(err, reason=True)}); "
                        f"nothing was written. Pass --opset {EXPORTER_OPSET} or higher, or leave it out") from err
    onnx.save(converted, str(path), save_as_external_data=large, location=f"{path.name}.data")


def _torch_export(wrapper, tensors, names, path: Path, model, opset: int | None, large: bool) -> None:
    """torch's ONNX export of the prediction to `path`, its failure as one line."""
    converter = logging.getLogger("onnxscript")  # torch converts to opsets it lacks, logging tracebacks of failures:
    level = converter.level  # export_onnx checks the opset written and says what matters in one line
    converter.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # the exporter notes that inputs share the batch/tokens axes: the intent
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
            torch.onnx.export(wrapper, tuple(tensors), str(path), input_names=names,
                              output_names=[model.task.output_name], dynamic_shapes=_dynamic_axes(tensors),
                              opset_version=opset, external_data=large, verbose=False)
    except Exception as err:  # the exporter's own message is pages long: its first line, and the way out
        raise UserError(f"torch could not export {model.backbone.name} to ONNX ({type(err).__name__}: "
                        f"{_first_line(err)}); nothing was written. Try another --opset, or predict with PyTorch") from err
    finally:
        converter.setLevel(level)


def export_onnx(model, folder: str | Path, opset: int | None = None, force: bool = False) -> dict:
    """Write `folder/model.onnx` + `export.json` (+ tokenizer files), atomically; returns the export's spec."""
    ort = _require_onnx()
    import onnx.defs

    folder = Path(folder)
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not 1 <= opset <= newest:
        raise UserError(f"--opset {opset} is not an ONNX opset this onnx knows (1 to {newest}); pass one of those, "
                        "or leave it out")
    if folder.exists() and any(folder.iterdir()) and not force:
        raise UserError(f"{folder} exists and is not empty; pass --force to replace the export, or choose another --out")
    model = model.eval().cpu()
    names, tensors, named = _as_named(model.backbone.example_batch(2))
    wrapper = _Prediction(model, names if named else None).eval()
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > LARGE_MODEL_BYTES
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(folder)
    try:
        # torch would convert to an opset below 18 itself, keep 18 where that fails: _convert converts more graphs
        _torch_export(wrapper, tensors, names, tmp / ONNX_FILE, model, opset and max(opset, EXPORTER_OPSET), large)
        if opset and opset < EXPORTER_OPSET:
            _convert(tmp / ONNX_FILE, opset, large, model.backbone.name)
        written = _opset_of(tmp / ONNX_FILE)
        if opset and written != opset:  # above the opsets torch implements, its conversion may fail: refused
            raise UserError(f"torch wrote {model.backbone.name}'s graph in opset {written}, not the {opset} asked for; "
                            "nothing was written. Pass a lower --opset, or leave it out")
        spec = {
            "format": "onnx",
            "file": ONNX_FILE,
            "inputs": [{"name": n, "dtype": str(t.dtype).removeprefix("torch."),
                        "shape": ["batch", *(["tokens"] if _is_sequence(t) else list(t.shape[1:]))]}
                       for n, t in zip(names, tensors)],
            "output": {"name": model.task.output_name, "task": model.task.name, "classes": model.classes,
                       **_target_columns(model.task)},
            "opset": written,
            "modality": model.modality,
            **({"decoding": modality.decoding} if (modality := MODALITIES.get(model.modality)).decoding else {}),
            "preprocess": model.preprocess.to_dict(),
            "backbone": model.backbone.name,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        }
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        model.backbone.save_assets(tmp)  # the tokenizer of a text body: preprocessing needs it
        try:
            runner = OnnxRunner(tmp)
        except Exception as err:  # an opset newer than this ONNX Runtime runs, or a conversion it rejects
            retry = f"--opset {EXPORTER_OPSET} or higher" if opset and opset < EXPORTER_OPSET else "a lower --opset"
            raise UserError(f"ONNX Runtime {ort.__version__} cannot load the opset {written} graph "
                            f"({type(err).__name__}: {_first_line(err, reason=True)}); nothing was written. "
                            f"Pass {retry}, or leave it out") from err
        difference = _max_difference(wrapper, runner, model.backbone)
        if not difference <= TOLERANCE:
            raise UserError(f"the ONNX graph's predictions differ from PyTorch's by {difference:.3g} (> {TOLERANCE:g}); "
                            "nothing was written. Try another --opset, or report the backbone")
        spec["check"] = {"max_abs_difference": difference, "tolerance": TOLERANCE, "batch_sizes": [1, 3]}
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return spec


def _target_columns(task) -> dict:
    """A multi-task graph's output columns per target: [start, stop) of its probabilities or its value."""
    parts = getattr(task, "parts", None)
    if not parts:
        return {}
    return {"targets": [{"name": p["name"], "task": p["task"].name, "columns": [p["block"].start, p["block"].stop],
                         **({"classes": p["classes"]} if p["classes"] else {})} for p in parts]}
