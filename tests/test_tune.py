"""Optuna tuning: trials in a SQLite study (shared by name/URL), pruning callback wired, best trial refit as a run."""
import json

import headstart as hs
from headstart.tuning import prune_callback


def test_tune_study_is_shared_and_best_is_refit(tiny_images, tmp_path):
    options = dict(image_size=64, epochs=1, batch_size=8, progress=False, cache_dir=str(tmp_path / "cache"), num_workers=0)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first = hs.tune(str(tiny_images), trials=2, strategies="linear-probe,finetune", out=str(tmp_path / "a"),
                    storage=storage, study_name="colors", **options)
    second = hs.tune(str(tiny_images), trials=1, strategies="linear-probe,finetune", out=str(tmp_path / "b"),
                     storage=storage, study_name="colors", **options)
    assert len(first["trials"]) == 2 and len(second["trials"]) == 3, "the second machine joined the same study"
    for t in second["trials"]:  # a probe's solved head reads none of the searched numbers; fine-tuning reads them
        assert {"lr", "weight_decay"} <= set(t["params"]) or t["params"] == {"strategy": "linear-probe"}
    assert all("epochs" not in t["params"] for t in second["trials"]), "an option the user fixed is not searched"
    best = hs.load(tmp_path / "b" / "best")
    assert best.metrics["accuracy"] >= 0 and json.loads((tmp_path / "b" / "tune.json").read_text())["best"] == second["best"]


def test_default_study_lives_in_the_run_folder(tiny_images, tmp_path):
    result = hs.tune(str(tiny_images), trials=1, strategies="linear-probe", out=str(tmp_path / "t"), image_size=64,
                     progress=False, cache_dir=str(tmp_path / "cache"))
    assert result["storage"].startswith("sqlite:///") and (tmp_path / "t" / "study.db").is_file()


def test_cli_strategy_is_fixed_not_dropped(tiny_images, tmp_path):
    from headstart.cli import main

    assert main(["tune", str(tiny_images), "--trials", "2", "--strategy", "linear-probe", "--image-size", "64",
                 "--no-progress", "--out", str(tmp_path / "t"), "--cache-dir", str(tmp_path / "cache")]) == 0
    trials = json.loads((tmp_path / "t" / "tune.json").read_text())["trials"]
    assert [t["params"]["strategy"] for t in trials] == ["linear-probe"] * 2  # it searched finetune and two-stage too


def test_prune_callback_stops_a_hopeless_trial():
    import optuna
    import pytest

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    callback = prune_callback(trial)

    class Trainer:
        sanity_checking = False
        callback_metrics = {"val_loss": 5.0}

    with pytest.raises(optuna.TrialPruned):
        callback.on_validation_end(Trainer(), None)


def test_trials_rank_by_validation_score_then_loss():
    """A fine-tune that gets more right beats a probe with a lower (unsmoothed) loss; equal scores fall to the loss."""
    from headstart.tasks import make_task
    from headstart.tuning import trial_value

    probe = trial_value({"best_val_loss": 0.12, "best_val_acc": 0.96}, by_score=True)[0]
    finetune = trial_value({"best_val_loss": 0.14, "best_val_acc": 1.00}, by_score=True)[0]
    tied = trial_value({"best_val_loss": 0.10, "best_val_acc": 1.00}, by_score=True)[0]
    assert finetune < probe and tied < finetune
    assert trial_value({"best_val_loss": 0.3}, by_score=False)[0] == 0.3, "regression: the loss"
    worse, better = (trial_value({"best_val_loss": loss, "best_val_mae": mae}, by_score=make_task("regression").select_by_score)[0]
                     for loss, mae in ((0.3, 0.9), (0.1, 0.4)))
    assert better < worse == 0.3, "regression's MAE is lower-is-better: 1 - MAE ranked the worse model first"


def test_an_untrained_body_is_tuned_only_with_strategies_that_train_it(tmp_path):
    """A table's mlp has no pre-trained features for setfit's pairs: a drawn setfit trial failed the whole study.
    Its head on the raw columns (linear-probe: the classical linear model) is a strategy like any other."""
    import numpy as np
    import pandas as pd
    import pytest

    from headstart.errors import UserError

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": np.where(x[:, 0] + x[:, 1] > 0, "hi", "lo")}).to_csv(
        tmp_path / "t.csv", index=False)
    options = dict(target="y", epochs=2, progress=False)
    result = hs.tune(str(tmp_path / "t.csv"), trials=4, strategies="setfit,linear-probe,finetune", out=str(tmp_path / "tune"),
                     **options)
    assert {t["params"]["strategy"] for t in result["trials"]} <= {"linear-probe", "finetune"}
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in result["trials"]), "no trial failed"
    with pytest.raises(UserError, match="untrained body and none of --strategies setfit"):
        hs.tune(str(tmp_path / "t.csv"), trials=1, strategies="setfit", out=str(tmp_path / "none"), **options)


def test_each_strategy_is_searched_only_over_what_it_reads():
    from headstart.tuning import SEARCHED, options_used_by

    assert options_used_by("linear-probe") == set(), "a solved head: lr, batch size, epochs and decay go unread"
    assert options_used_by("setfit") == {"lr", "weight_decay"}, "one pass in --pair-batch-size steps"
    assert options_used_by("two-stage") == options_used_by("auto") == set(SEARCHED)


def test_a_probe_trial_is_not_fitted_twice(tiny_images, tmp_path):
    """Three linear-probe trials drew three learning rates it never reads and fitted the same head three times."""
    result = hs.tune(str(tiny_images), trials=2, strategies="linear-probe", out=str(tmp_path / "t"), image_size=64,
                     progress=False, cache_dir=str(tmp_path / "cache"), num_workers=0)
    assert [t["params"] for t in result["trials"]] == [{"strategy": "linear-probe"}] * 2
    assert result["trials"][0]["value"] == result["trials"][1]["value"]
    assert not (tmp_path / "t" / "trials" / "001").exists(), "the repeat took the first trial's value, no fit"


def test_zero_trials_is_refused_before_a_study_is_made(tiny_images, tmp_path):
    import pytest

    from headstart.errors import UserError

    with pytest.raises(UserError, match="--trials must be at least 1"):
        hs.tune(str(tiny_images), trials=0, out=str(tmp_path / "t"))
    assert not (tmp_path / "t").exists()
