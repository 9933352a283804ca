"""ONNX export of a run's model, checked against PyTorch with ONNX Runtime before it is kept.

The exported graph is the whole prediction: body, head and the task's post-processing (softmax, sigmoid, or
the regression target's scale), so ONNX Runtime's output is the prediction itself. Preprocessing (decode,
resize and normalise; tokenise; encode columns; resample) stays outside the graph and is described in
`export.json`; text exports carry their tokenizer files beside the graph.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from headstart.errors import UserError

ONNX_FILE, SPEC_FILE = "model.onnx", "export.json"
TOLERANCE = 1e-4  # max abs difference of ONNX Runtime's predictions from PyTorch's (probabilities or target units)
LARGE_MODEL_BYTES = 1.5e9  # protobuf's 2 GB limit: bigger weights go to an external data file beside the graph
TENSOR_INPUT = "input"  # the input's name when the body takes one tensor (images, spectrograms, table rows)


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
        if not spec_path.is_file():
            raise UserError(f"{folder} holds no ONNX export ({SPEC_FILE} missing); run `headstart export RUN` first")
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


def export_onnx(model, folder: str | Path, opset: int | None = None, force: bool = False) -> dict:
    """Write `folder/model.onnx` + `export.json` (+ tokenizer files), atomically; returns the export's spec."""
    ort = _require_onnx()
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not force:
        raise UserError(f"{folder} exists and is not empty; pass --force to replace the export, or choose another --out")
    model = model.eval().cpu()
    names, tensors, named = _as_named(model.backbone.example_batch(2))
    wrapper = _Prediction(model, names if named else None).eval()
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > LARGE_MODEL_BYTES
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        with warnings.catch_warnings():  # the exporter notes that inputs share the batch/tokens axes: that is the intent
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
            try:
                torch.onnx.export(wrapper, tuple(tensors), str(tmp / ONNX_FILE), input_names=names,
                                  output_names=[model.task.output_name], dynamic_shapes=_dynamic_axes(tensors),
                                  opset_version=opset, external_data=large, verbose=False)
            except Exception as err:  # the exporter's own message is pages long: its first line, and the way out
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise UserError(f"torch could not export {model.backbone.name} to ONNX ({type(err).__name__}: {first[:200]}); "
                                "nothing was written. Try another --opset, or predict with PyTorch") from err
        spec = {
            "format": "onnx",
            "file": ONNX_FILE,
            "inputs": [{"name": n, "dtype": str(t.dtype).removeprefix("torch."),
                        "shape": ["batch", *(["tokens"] if _is_sequence(t) else list(t.shape[1:]))]}
                       for n, t in zip(names, tensors)],
            "output": {"name": model.task.output_name, "task": model.task.name, "classes": model.classes},
            "modality": model.modality,
            "preprocess": model.preprocess.to_dict(),
            "backbone": model.backbone.name,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        }
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        model.backbone.save_assets(tmp)  # the tokenizer of a text body: preprocessing needs it
        difference = _max_difference(wrapper, OnnxRunner(tmp), model.backbone)
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
