import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import headstart as hs
from conftest import make_images
from headstart.backbones.timm_backbone import TimmBackbone
from headstart.cli import main
from headstart.config import FitConfig
from headstart.errors import UserError

FAST = dict(image_size=64, head_epochs=10, epochs=1, batch_size=8, progress=False)


def test_two_stage_run_directory(tiny_run):
    run, _ = tiny_run
    files = {p.name for p in run.path.iterdir()}
    assert {"config.yaml", "model", "metrics.json", "history.csv", "history.png", "confusion_matrix.png", "data.json"} <= files
    assert {p.name for p in (run.path / "model").iterdir()} == {"model.safetensors", "model.json", "reference.safetensors"}
    spec = json.loads((run.path / "model" / "model.json").read_text())
    assert spec["classes"] == ["blue", "green", "red"] and spec["preprocess"]["input_size"] == 64
    metrics = run.metrics
    assert metrics["accuracy"] >= 0.8, metrics["accuracy"]  # coloured squares: easy for ImageNet features
    assert {"precision_macro", "recall_macro", "f1_macro", "per_class", "confusion_matrix"} <= set(metrics)
    assert "baseline" not in metrics, "a pre-trained body: `compare` judges the transfer, a fit does not"
    with open(run.path / "history.csv") as f:
        stages = {row["stage"] for row in csv.DictReader(f)}
    assert stages == {"head", "finetune"}, "history has both stages"
    env = FitConfig.from_yaml(run.path / "config.yaml").resolved["environment"]  # what computed it, beside what was asked
    assert env["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0] and "timm" in env["packages"]
    assert env["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert env["gpu"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else None)


def test_load_reproduces_predictions(tiny_run):
    run, data = tiny_run
    paths = sorted(str(p) for p in data.rglob("*.png"))[:10]
    before = run.predict_proba(paths)
    again = hs.load(run.path).predict_proba(paths)
    assert np.abs(before - again).max() < 1e-5


@pytest.mark.parametrize("name", ["model.json", "model.safetensors"])
def test_a_damaged_model_file_is_one_clear_error(tiny_run, tmp_path, name):
    from headstart.errors import UserError

    run, _ = tiny_run
    copy = shutil.copytree(run.path / "model", tmp_path / "model")
    (copy / name).write_bytes((copy / name).read_bytes()[:100])  # a copy cut short
    with pytest.raises(UserError, match=rf"{name} is damaged .*restore the run folder from a copy, or fit again"):
        hs.load(tmp_path)


def test_a_folder_holding_runs_names_them(tiny_run, tmp_path):
    """`evaluate tune_out DATA`: the tune folder is not a run, its best/ is."""
    run, data = tiny_run
    shutil.copytree(run.path / "model", tmp_path / "tune" / "best" / "model")
    shutil.copytree(run.path / "model", tmp_path / "tune" / "trials" / "000" / "model")
    with pytest.raises(UserError, match=rf"not a headstart run .*the runs in it: {tmp_path / 'tune' / 'best'}, "
                                        rf"{tmp_path / 'tune' / 'trials' / '000'}$"):
        hs.load(tmp_path / "tune")
    with pytest.raises(UserError, match=rf"{tmp_path / 'tune' / 'best'} is a run's folder, not a backbone name: "
                                        rf"reuse its body as run:{tmp_path / 'tune' / 'best'}"):
        hs.fit(str(data), model=str(tmp_path / "tune" / "best"), out=str(tmp_path / "x"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"pass the --out folder of a fit$"):
        hs.load(tmp_path / "empty")


def test_predict_top_k_and_evaluate(tiny_run):
    run, data = tiny_run
    rows = run.predict([str(data / "red")], top_k=2)
    assert len(rows) == 14 and len(rows[0]["predictions"]) == 2
    probs = [p["probability"] for p in rows[0]["predictions"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    metrics = run.evaluate(str(data))
    assert metrics["n"] == 42 and metrics["accuracy"] >= 0.8
    assert (run.path / json.loads(json.dumps(metrics["saved_to"])).split("/")[-1] / "metrics.json").is_file()
    with open(Path(metrics["saved_to"]) / "predictions.csv") as f:
        scored = list(csv.DictReader(f))
    assert len(scored) == 42 and {r["true"] for r in scored} == {"red", "green", "blue"}
    assert sum(r["true"] == r["predicted"] for r in scored) / 42 == pytest.approx(metrics["accuracy"])


def test_predict_refuses_top_k_under_one_and_shows_progress_past_a_batch(tiny_run, capsys):
    run, data = tiny_run
    with pytest.raises(UserError, match="top_k must be at least 1"):
        run.predict([str(data / "red")], top_k=0)
    files = [str(p) for p in sorted(data.rglob("*.png"))] * 2  # 84 images: two batches of 64
    assert main(["predict", str(run.path), *files]) == 0
    assert "predict: 100%" in capsys.readouterr().err


def test_cli_predict_csv_and_evaluate(tiny_run, tmp_path, capsys):
    run, data = tiny_run
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run.path), str(data / "blue" / "blue_000.png"), str(data / "green"),
                 "--top-k", "3", "--format", "csv", "--output", str(out)]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["input", "label_1", "probability_1", "label_2", "probability_2", "label_3", "probability_3"]
    assert len(rows) == 1 + 1 + 14
    assert main(["evaluate", str(run.path), str(data)]) == 0
    out = capsys.readouterr().out
    assert f"scored: {data}\n" in out and "accuracy" in out


def test_evaluate_on_a_split_layout_says_which_part_it_scored(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    root = tmp_path / "layout"
    make_images(root / "train", per_class=2)
    make_images(root / "val", per_class=3, seed=1)
    metrics = run.evaluate(str(root), save=False)
    assert metrics["n"] == 9 and metrics["scored"] == f"{root / 'val'} (no test folder)"
    make_images(root / "test", per_class=4, seed=2)
    assert main(["evaluate", str(run.path), str(root)]) == 0
    assert f"scored: {root / 'test'}\n" in capsys.readouterr().out



def test_predict_answers_an_unreadable_file_in_its_place(tiny_run, tmp_path, capsys):
    run, data = tiny_run
    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        (folder / name).write_bytes((data / "red" / "red_000.png").read_bytes())
    (folder / "b.png").write_bytes(b"\x89PNG not really")
    rows = run.predict([str(folder)])
    assert [r["input"].rsplit("/", 1)[1] for r in rows] == ["a.png", "b.png", "c.png"], "one row per input, in order"
    assert rows[0]["predictions"][0]["label"] == "red" and rows[2]["predictions"][0]["label"] == "red"
    assert "predictions" not in rows[1] and "cannot identify" in rows[1]["error"]
    assert main(["predict", str(run.path), str(folder), "--format", "csv"]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out.strip())))
    assert table[0] == ["input", "label_1", "probability_1", "error"] and table[2][1:3] == ["", ""] and table[2][3]
    with pytest.raises(UserError, match="none of the 1 input"):
        run.predict([str(folder / "b.png")])

def test_linear_probe_rerun_never_runs_the_backbone(tiny_images, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = TimmBackbone.forward_features

    def counting(self, x):
        calls["n"] += 1
        return real(self, x)

    monkeypatch.setattr(TimmBackbone, "forward_features", counting)
    first = hs.fit(str(tiny_images), strategy="linear-probe", out=str(tmp_path / "a"), **FAST)
    assert calls["n"] > 0
    calls["n"] = 0
    second = hs.fit(str(tiny_images), strategy="linear-probe", out=str(tmp_path / "b"), **FAST)
    assert calls["n"] == 0, "second fit ran the frozen backbone again"
    assert second.metrics["feature_cache"]["computed"] == 0
    assert second.metrics["accuracy"] == pytest.approx(first.metrics["accuracy"])


def test_feature_cache_key_depends_on_file_content(tiny_images, tmp_path):
    hs.fit(str(tiny_images), strategy="linear-probe", out=str(tmp_path / "a"), **FAST)
    target = tiny_images / "red" / "red_000.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(target)  # same name, new content
    run = hs.fit(str(tiny_images), strategy="linear-probe", out=str(tmp_path / "b"), **FAST)
    assert run.metrics["feature_cache"]["computed"] == 1


def test_existing_run_directory_needs_force(tiny_images, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="--force"):
        hs.fit(str(tiny_images), strategy="linear-probe", out=str(out), **FAST)
    assert (out / "precious.txt").read_text() == "keep me"
    code = main(["fit", str(tiny_images), "--strategy", "linear-probe", "--out", str(out), "--image-size", "64", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--force" in err
    with pytest.raises(UserError, match="holds files no headstart command wrote; --force replaces only an earlier run"):
        hs.fit(str(tiny_images), strategy="linear-probe", out=str(out), force=True, **FAST)
    assert (out / "precious.txt").read_text() == "keep me"
    run = hs.fit(str(tiny_images), strategy="linear-probe", out=str(tmp_path / "earlier"), **FAST)
    (run.path / "stale.txt").write_text("from the earlier run")
    hs.fit(str(tiny_images), strategy="linear-probe", out=str(run.path), force=True, **FAST)  # an earlier run: replaced
    assert not (run.path / "stale.txt").exists() and (run.path / "model" / "model.safetensors").is_file()


def test_force_never_deletes_what_the_command_reads(tiny_images, tmp_path):
    """--out set to the data, a folder above it, or the run a fit starts from: each was deleted before."""
    data = tmp_path / "project" / "data"
    shutil.copytree(tiny_images, data)
    images = sorted(data.rglob("*.png"))
    run = hs.fit(str(data), strategy="linear-probe", out=str(tmp_path / "source"), **FAST)
    for out, model in ((data, "auto"), (data.parent, "auto"), (run.path, f"run:{run.path}")):
        with pytest.raises(UserError, match=r"holds .*, which this command reads; --force would delete it"):
            hs.fit(str(data), model=model, strategy="linear-probe", out=str(out), force=True, **FAST)
    with pytest.raises(UserError, match="which this command reads"):
        hs.update(run.path, str(data), out=str(run.path), force=True)
    assert (run.path / "model" / "model.safetensors").is_file() and sorted(data.rglob("*.png")) == images


def test_two_stage_without_validation_rows_keeps_the_last_epoch(tiny_images, tmp_path):
    """--val-fraction 0: fine-tuning had no start to compare on (a KeyError), and no epoch to pick: the last one stays."""
    run = hs.fit(str(tiny_images), strategy="two-stage", val_fraction=0, out=str(tmp_path / "run"), **{**FAST, "epochs": 2})
    note = run.metrics["stages"]["finetune"]
    assert note["best_epoch"] == note["epochs_run"] == 2 and note["best_val_loss"] is None
    with pytest.raises(UserError, match="tune compares trials on validation rows"):
        hs.tune(str(tiny_images), trials=1, val_fraction=0, out=str(tmp_path / "tune"))


def test_finetune_strategy_trains_the_backbone(tiny_images, tmp_path):
    run = hs.fit(str(tiny_images), strategy="finetune", out=str(tmp_path / "ft"), **FAST)
    assert run.metrics["stages"]["finetune"]["trainable_params"] > 3_000_000
    assert "head" not in run.metrics["stages"]


def test_unknown_strategy_and_option_are_clear_errors(tiny_images):
    with pytest.raises(UserError, match="unknown strategy 'magic'"):
        hs.fit(str(tiny_images), strategy="magic")
    with pytest.raises(UserError, match=r"unknown option\(s\): epoch \(did you mean epochs\?\)"):
        hs.fit(str(tiny_images), epoch=1)
    with pytest.raises(UserError, match="unknown option"):
        hs.rank(str(tiny_images), "efficientnet_lite0", learning_rate=1)


def test_cli_help_lists_strategies(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for word in ("linear-probe", "two-stage", "finetune", "--bn", "--devices", "--precision", "--num-nodes"):
        assert word in out


def test_mlp_head(tiny_images, tmp_path):
    run = hs.fit(str(tiny_images), strategy="linear-probe", head="mlp", out=str(tmp_path / "mlp"), **FAST)
    assert isinstance(hs.load(run.path).model.head[0], torch.nn.Linear)
    assert json.loads((run.path / "model" / "model.json").read_text())["head"]["name"] == "mlp"


def test_the_package_api_stays_functions_and_help_loads_no_training_code():
    """The lazy package: no submodule import may rebind an API name, and `--help` must not import Lightning."""
    import importlib
    import pkgutil
    import subprocess
    import sys

    for mod in pkgutil.iter_modules(hs.__path__):
        importlib.import_module(f"headstart.{mod.name}")  # every submodule imported, as a long session would
    assert all(callable(getattr(hs, name)) and not isinstance(getattr(hs, name), type(hs))
               for name in hs.__all__ if name != "__version__"), "an API name became a module"
    code = ("import sys; from headstart.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('lightning', 'timm', 'transformers', 'sklearn', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def _finetune_rows_and_weights(run):
    from safetensors.torch import load_file

    with open(run.path / "history.csv") as f:
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f) if row["stage"] != "head"]
    return rows, load_file(str(run.path / "model" / "model.safetensors"))


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_fit_trains_the_same_model_from_a_cold_and_a_warm_feature_cache(tmp_path):
    data = make_images(tmp_path / "colors", per_class=10)
    runs = [hs.fit(str(data), strategy="two-stage", out=str(tmp_path / f"run{i}"), cache_dir=str(tmp_path / "cache"),
                   **FAST) for i in range(2)]
    assert runs[0].metrics["feature_cache"]["computed"] > 0 and runs[1].metrics["feature_cache"]["computed"] == 0
    (rows0, weights0), (rows1, weights1) = map(_finetune_rows_and_weights, runs)
    assert rows0 and rows0 == rows1, "the extraction the first run did must not move fine-tuning's shuffles and crops"
    assert _same_weights(weights0, weights1)


def test_auto_trains_what_it_picks_as_that_strategy_does(tmp_path):
    data = make_images(tmp_path / "colors", per_class=32, size=24)  # 22 a class in training, a strong probe: lp-ft
    auto = hs.fit(str(data), strategy="auto", out=str(tmp_path / "auto"), cache_dir=str(tmp_path / "cache-a"), **FAST)
    assert auto.metrics["stages"]["auto"]["picked"] == "lp-ft", auto.metrics["stages"]["auto"]
    direct = hs.fit(str(data), strategy="lp-ft", out=str(tmp_path / "direct"), cache_dir=str(tmp_path / "cache-d"), **FAST)
    (rows_a, weights_a), (rows_d, weights_d) = map(_finetune_rows_and_weights, (auto, direct))
    assert rows_a and rows_a == rows_d, "auto's measurements must not move the picked strategy's random draws"
    assert _same_weights(weights_a, weights_d)


def test_saved_files_and_folders_take_the_umask_not_private_modes(tiny_run, tmp_path):
    """A server running as another user must read a run: mkstemp/mkdtemp/safetensors would make them 0600/0700."""
    import os
    import stat

    from headstart.io_utils import write_json

    run, _ = tiny_run
    old = os.umask(0o022)
    try:
        run.model.save(tmp_path / "model")
        write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    for path in (tmp_path / "model", tmp_path / "model" / "model.safetensors", tmp_path / "metrics.json"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{path.name}: {oct(mode)}"
