"""ONNX export (`headstart export`, `hs.export`) and ONNX Runtime inference (`predict --engine onnx`), every modality."""
import json
import sys

import numpy as np
import pandas as pd
import pytest

import headstart as hs
from headstart.cli import main
from headstart.deploy import onnx as onnx_export
from headstart.errors import UserError

from test_audio import FAST as AUDIO_FAST, make_tones
from test_tabular import FAST as TABLE_FAST, features, make_table
from test_text import write_csv, sentiment_rows

TOLERANCE = 1e-4


def opset_of(path) -> int:
    """The ONNX opset a graph file declares (what a runtime checks), not what headstart says of it."""
    import onnx

    imports = onnx.load(str(path), load_external_data=False).opset_import
    return next(o.version for o in imports if o.domain in ("", "ai.onnx"))


def agree(run, inputs) -> float:
    """Largest gap between PyTorch's and ONNX Runtime's predictions on the same inputs (same predicted classes too)."""
    eager, onnx = run.predict_outputs(inputs), run.predict_outputs(inputs, engine="onnx")
    assert eager.shape == onnx.shape and len(eager) == len(inputs)
    if eager.ndim == 2:
        assert (eager.argmax(1) == onnx.argmax(1)).all()
    return float(np.abs(eager - onnx).max())


@pytest.fixture(scope="module")
def exported_image_run(tiny_run, tmp_path_factory):
    run, data = tiny_run
    out = tmp_path_factory.mktemp("export") / "run"
    import shutil

    shutil.copytree(run.path, out)  # the session's shared run stays read-only
    copy = hs.load(out)
    return copy, copy.export(), data


def test_image_export_writes_a_checked_graph_and_its_spec(exported_image_run):
    run, spec, _ = exported_image_run
    folder = run.path / "export"
    assert (folder / "model.onnx").is_file() and spec["saved_to"] == str(folder)
    saved = json.loads((folder / "export.json").read_text())
    assert saved["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 3, 64, 64]}]
    assert saved["output"] == {"name": "probabilities", "task": "classification", "classes": run.classes}
    assert saved["preprocess"]["input_size"] == 64 and saved["preprocess"]["mean"][0] == pytest.approx(0.485)
    assert saved["check"]["max_abs_difference"] <= TOLERANCE and saved["check"]["batch_sizes"] == [1, 3]
    assert saved["opset"] == opset_of(folder / "model.onnx") >= 18, "export.json records the opset written"
    assert "libjpeg's 1/2, 1/4, 1/8 scales" in saved["decoding"], "what a reimplementation must do to match"


def test_onnx_runtime_predicts_what_pytorch_predicts_on_images(exported_image_run):
    run, _, data = exported_image_run
    images = sorted(str(p) for p in data.rglob("*.png"))[:11]  # not a multiple of the batch size either
    assert agree(run, images) <= TOLERANCE
    onnx_probs = run.predict_outputs(images, engine="onnx")
    assert np.allclose(onnx_probs.sum(1), 1, atol=1e-5), "the graph ends in the softmax"
    assert run.predict(images[:2], top_k=2, engine="onnx")[0]["predictions"][0]["label"] == \
        run.predict(images[:2], top_k=2)[0]["predictions"][0]["label"]


def test_onnx_runtime_takes_cuda_only_where_it_is_offered_and_a_gpu_is_there(exported_image_run):
    offered = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_export.onnx_providers(offered, gpu=True) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_export.onnx_providers(offered, gpu=False) == ["CPUExecutionProvider"]
    assert onnx_export.onnx_providers(["CPUExecutionProvider"], gpu=True) == ["CPUExecutionProvider"]
    run, _, _ = exported_image_run
    runner = onnx_export.OnnxRunner(run.path / "export")
    import onnxruntime as ort
    import torch

    expected = "CUDAExecutionProvider" if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers() else "CPUExecutionProvider"
    assert runner.provider == expected


def test_an_export_is_not_replaced_without_force_and_a_bad_one_is_not_kept(exported_image_run, monkeypatch, tmp_path):
    run, _, _ = exported_image_run
    before = (run.path / "export" / "model.onnx").stat().st_mtime_ns
    with pytest.raises(UserError, match="--force"):
        run.export()
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # every graph now "differs": the check must refuse it
    with pytest.raises(UserError, match="differ from PyTorch"):
        run.export(out=tmp_path / "refused")
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".refused*")), "nothing half-written is left"
    with pytest.raises(UserError, match="differ from PyTorch"):
        run.export(force=True)
    assert (run.path / "export" / "model.onnx").stat().st_mtime_ns == before, "the good export survives a refused one"


def test_onnx_engine_without_an_export_and_without_onnxruntime_are_clear_errors(tiny_run, monkeypatch):
    run, data = tiny_run
    image = str(next(data.rglob("*.png")))
    with pytest.raises(UserError, match=r"reads the export in .*/export.*run `headstart export .*` without --out"):
        hs.load(run.path).predict([image], engine="onnx")
    with pytest.raises(UserError, match="unknown engine"):
        run.predict([image], engine="tensorrt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the export extra was not installed
    with pytest.raises(UserError, match=r"headstart\[export\]"):
        run.export(out="unused")


def test_cli_export_then_predict_with_onnx_runtime(tiny_run, tmp_path, capsys):
    run, data = tiny_run
    assert main(["export", str(run.path), "--out", str(tmp_path / "onnx")]) == 0
    assert "ONNX Runtime matches PyTorch" in capsys.readouterr().out
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    assert main(["export", str(run.path), "--out", str(tmp_path / "onnx")]) == 2, "no silent overwrite"
    assert "--force" in capsys.readouterr().err
    image = str(next(data.rglob("*.png")))
    assert main(["predict", str(run.path), image, "--engine", "onnx"]) == 2, "--engine onnx reads RUN/export only"
    assert "an export written with --out elsewhere is not used" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "ONNX" in capsys.readouterr().out


def test_cli_predict_engine_onnx_matches_torch(exported_image_run, capsys):
    run, _, data = exported_image_run
    folder = str(data / "green")
    assert main(["predict", str(run.path), folder, "--format", "json"]) == 0
    eager = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run.path), folder, "--format", "json", "--engine", "onnx"]) == 0
    onnx = json.loads(capsys.readouterr().out)
    assert [r["predictions"][0]["label"] for r in onnx] == [r["predictions"][0]["label"] for r in eager]
    assert max(abs(a["predictions"][0]["probability"] - b["predictions"][0]["probability"]) for a, b in zip(onnx, eager)) <= TOLERANCE


def test_text_export_takes_any_batch_and_length(tmp_path):
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows())
    run = hs.fit(str(data), strategy="linear-probe", out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), progress=False)
    spec = hs.export(run.path)
    names = [i["name"] for i in spec["inputs"]]
    assert "input_ids" in names and "attention_mask" in names
    assert all(i["shape"] == ["batch", "tokens"] for i in spec["inputs"])
    assert (run.path / "export" / "backbone" / "tokenizer.json").is_file(), "the tokenizer travels with the graph"
    texts = ["dull", "the acting was wonderful, truly wonderful from start to finish " * 4] + [t for t, _ in sentiment_rows(5, seed=3)]
    assert agree(hs.load(run.path), texts) <= TOLERANCE


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory):
    """A regression MLP on the synthetic table (its LayerNorm has no ONNX op before opset 17)."""
    root = tmp_path_factory.mktemp("export_table")
    data = make_table(root / "t.csv", n=120)
    pd.read_csv(data).drop(columns=["label"]).to_csv(data, index=False)
    run = hs.fit(str(data), target="y", strategy="finetune", out=str(root / "run"), cache_dir=str(root / "cache"),
                 **{**TABLE_FAST, "epochs": 5})
    return run, data


def test_an_opset_is_written_as_asked_or_refused_in_one_line(tabular_run, tmp_path, caplog):
    run, _ = tabular_run
    spec = run.export(out=tmp_path / "17", opset=17)  # below torch's 18: onnx converts the graph, checked as any
    assert spec["opset"] == 17 == opset_of(tmp_path / "17" / "model.onnx")
    assert spec["check"]["max_abs_difference"] <= TOLERANCE, "the converted graph passed the same check"
    with pytest.raises(UserError, match=r"convert mlp's graph to opset 13 \(No Previous Version of LayerNormalization "
                                        r"exists\); nothing was written\. Pass --opset 18 or higher") as err:
        run.export(out=tmp_path / "13", opset=13)  # torch wrote 18 for 13, exited 0, and logged a traceback
    assert "\n" not in str(err.value) and not (tmp_path / "13").exists() and not list(tmp_path.glob(".13*"))
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the user's output"
    with pytest.raises(UserError, match=r"--opset 99 is not an ONNX opset .*\(1 to \d+\)"):
        run.export(out=tmp_path / "99", opset=99)


def test_tabular_regression_export_predicts_in_target_units(tabular_run):
    run, data = tabular_run
    spec = run.export()
    assert spec["output"]["name"] == "values" and spec["inputs"][0]["shape"][0] == "batch"
    rows = features(pd.read_csv(data).head(9))
    assert agree(run, rows) <= TOLERANCE * max(1.0, float(np.abs(run.predict_outputs(rows)).max()))


def test_audio_export_carries_the_spectrogram_front_end(tmp_path):
    data = make_tones(tmp_path / "tones", per_class=6, rate=8000)
    run = hs.fit(str(data), strategy="linear-probe", out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), **AUDIO_FAST)
    spec = run.export()
    assert spec["inputs"][0]["name"] == "input" and spec["inputs"][0]["shape"][1] == run.model.preprocess.samples
    assert agree(run, sorted(str(p) for p in data.rglob("*.wav"))[:5]) <= TOLERANCE


def test_an_exporter_failure_is_one_clear_line_and_leaves_nothing(exported_image_run, monkeypatch, tmp_path):
    import torch

    run, _, _ = exported_image_run

    def fails(*args, **kwargs):
        raise RuntimeError("Failed to export the model with torch.export.\n(pages of detail)")

    monkeypatch.setattr(torch.onnx, "export", fails)
    with pytest.raises(UserError, match=r"could not export .*RuntimeError: Failed to export the model with torch.export\.\); ") as err:
        run.export(out=tmp_path / "failed")
    assert "\n" not in str(err.value) and not (tmp_path / "failed").exists() and not list(tmp_path.glob(".failed*"))
