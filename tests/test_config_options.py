"""Option values are checked in FitConfig, so the API and every command refuse a bad one in one line, before a folder."""
import argparse
import dataclasses

import pytest
import torch

from headstart import cli
from headstart.config import NUMERIC_OPTIONS, FitConfig
from headstart.errors import UserError


@pytest.mark.parametrize("option, value", [
    ("batch_size", 0), ("label_smoothing", 2.0), ("weight_decay", -1.0), ("ulmfit_factor", -1.0), ("lr", -0.01),
    ("lr", "-0.01"), ("l2sp_alpha", -1.0), ("lr_mult", 0.0), ("patience", -1), ("freeze_until", -2), ("pair_rounds", 0),
    ("lora_rank", 0), ("epochs", 0), ("head_lr", 0.0), ("warmup", 1.5), ("seed", -1), ("num_nodes", 0),
    ("lr", float("nan")), ("batch_size", "8"), ("batch_size", 2.5), ("epochs", True), ("sample_rate", None),
])
def test_an_out_of_range_number_is_one_line_naming_the_option_and_the_value(option, value):
    with pytest.raises(UserError, match=f"^--{option.replace('_', '-')} must be .* not ") as err:
        FitConfig(data="x", **{option: value})
    assert "\n" not in str(err.value)


def test_values_that_mean_something_pass():
    cfg = FitConfig(data="x", patience=0, head_patience=0, freeze_until=0, l2sp_alpha=0.0, weight_decay=0.0,
                    label_smoothing=0.0, lr_mult=1.0, ulmfit_factor=1.0, warmup=0.0, num_workers=0, lr="0.01",
                    val_fraction=0.0, test_fraction=0.0)
    assert cfg.lr == 0.01
    assert FitConfig(data="x", lr="auto").lr == "auto"
    assert FitConfig(data="x").batch_size is None, "unset: the backbone's default, filled later"
    for devices in ("auto", "-1", "2", 2, "0,1", "1,"):
        FitConfig(data="x", devices=devices)
    for devices in ("0", "-2", "two", ""):
        with pytest.raises(UserError, match="--devices must be"):
            FitConfig(data="x", devices=devices)


def test_every_numeric_option_has_a_range():
    numeric = {f.name for f in dataclasses.fields(FitConfig) if "int" in f.type or "float" in f.type}
    assert numeric == {*NUMERIC_OPTIONS, "crop_scale"}  # crop_scale: a number or auto, checked on its own


def test_a_misspelt_choice_is_refused_with_the_closest_value():
    with pytest.raises(UserError, match=r"--task must be one of auto, classification, regression, multilabel, "
                                        r"not 'regresion' \(did you mean regression\?\)"):
        FitConfig(data="x", task="regresion")
    with pytest.raises(UserError, match="--precision must be one of auto, 32-true, bf16-mixed.*not 'fp8'$"):
        FitConfig(data="x", precision="fp8")
    for option, value in (("balance", "weight"), ("refit", "sometimes"), ("accelerator", "tpuu"), ("head", "mlpp"),
                          ("modality", "tabularr")):
        with pytest.raises(UserError, match=f"--{option} must be one of"):
            FitConfig(data="x", **{option: value})


def test_balance_applies_to_classification_and_multilabel_only():
    with pytest.raises(UserError, match="--balance weights applies to classification and multi-label only"):
        FitConfig(data="x", task="regression", balance="weights")
    with pytest.raises(UserError, match="--balance sampler applies to single-label classification"):
        FitConfig(data="x", task="multilabel", balance="sampler")
    FitConfig(data="x", task="multilabel", balance="weights")
    cfg = FitConfig(data="cars.csv", balance="sampler")  # --task auto: the data decides, then fit asks again
    with pytest.raises(UserError, match="cars.csv is a regression task: drop --balance"):
        cfg.check_task("regression")
    cfg.check_task("classification")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_a_gpu_that_is_not_there_is_refused_but_a_gpu_run_record_still_reads(no_gpu, tmp_path, monkeypatch):
    for accelerator in ("gpu", "cuda"):
        with pytest.raises(UserError, match=f"--accelerator {accelerator}: no GPU is visible.*--accelerator cpu or auto"):
            FitConfig(data="x", accelerator=accelerator)
    FitConfig(data="x", accelerator="cpu")
    (tmp_path / "config.yaml").write_text(FitConfig(data="x").to_yaml().replace("accelerator: auto", "accelerator: gpu"))
    assert FitConfig.from_yaml(tmp_path / "config.yaml").accelerator == "gpu"  # update reads a GPU run on a laptop
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    FitConfig(data="x", accelerator="gpu")


@pytest.mark.parametrize("flags, named", [(["--batch-size", "0"], "--batch-size"),
                                          (["--strategy", "lora", "--lora-rank", "0"], "--lora-rank"),
                                          (["--accelerator", "gpu"], "--accelerator")])
def test_the_cli_prints_one_line_and_writes_no_folder(no_gpu, tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    assert cli.main(["fit", str(tmp_path / "data"), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"headstart: error: {named}") and err.count("\n") == 1
    assert not out.exists()


def test_the_api_refuses_a_misspelt_task_before_any_folder(tmp_path):
    import headstart as hs

    with pytest.raises(UserError, match="did you mean regression"):
        hs.fit(str(tmp_path / "data"), task="regresion", out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_fit_help_shows_defaults_of_values_not_of_flags(capsys):
    text = _help("fit", capsys)
    assert "--no-progress no progress bars (shown by default)" in text and "(default: True)" not in text
    assert "(default: False)" not in text and "(sigmoid head, BCE) --label-separator" in text  # --multi-label's
    assert "16-true, 64-true (default: auto)" in text, "an option that takes a value keeps its default"


def test_compare_defaults_to_auto_in_the_api_and_the_cli():
    import inspect

    import headstart as hs

    parser = cli.build_parser()
    compare = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["compare"]
    api_default = inspect.signature(hs.compare).parameters["strategy"].default
    assert api_default == compare.get_default("strategy") == FitConfig.strategy == "auto"


def test_resume_is_a_flag_of_the_commands_that_save_a_model_and_refused_by_tune():
    parser = cli.build_parser()
    for command in ("fit", "update"):
        args = [command, "DATA"] if command == "fit" else [command, "RUN", "DATA"]
        assert parser.parse_args([*args, "--resume"]).resume is True
    with pytest.raises(SystemExit):  # rank saves no model: no --resume to give
        parser.parse_args(["rank", "DATA", "--resume"])
    import headstart as hs

    with pytest.raises(UserError, match="--resume is fit's"):
        hs.tune("DATA", trials=1, resume=True)


def test_update_help_lists_no_body_option_and_refuses_one(capsys):
    """update starts from the run's own body: --model and --weights are not offered, and say why when given."""
    with pytest.raises(SystemExit):
        cli.main(["update", "--help"])
    shown = capsys.readouterr().out
    assert "--replay" in shown and "--model" not in shown and "--weights" not in shown
    assert cli.main(["update", "RUN", "DATA", "--model", "mlp"]) == 2
    assert "update starts from the run's own model; --model does not apply" in capsys.readouterr().err
