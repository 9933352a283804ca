"""Choosing and judging a model as a user does: evaluate on the fit's own data, rank's options and candidates, compare's
verdict on a small test split, multi-label compare, and compare's plot."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import headstart as hs
from headstart.errors import UserError


def _fake_run(folder: Path, data: str, out: str, sizes: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": data, "out": out}))
    (folder / "data.json").write_text(json.dumps({"sizes": sizes}))
    return folder


def test_evaluate_on_the_fits_own_data_says_its_training_rows_were_scored(tiny_run, tmp_path, capsys):
    """`headstart evaluate RUN DATA` on the folder the fit split itself scored its training rows silently (0.95
    against the fit's 0.67 on its test images)."""
    from headstart.cli import main

    run, data = tiny_run
    assert main(["evaluate", str(run.path), str(data)]) == 0
    said = capsys.readouterr().out
    assert "warning: " in said and "trained or validated it" in said and "metrics.json" in said
    assert "trained or validated it" in run.evaluate(str(data), save=False)["warning"], "the API carries it too"
    test_only = tmp_path / "new"
    for cls in ("red", "green"):
        (test_only / cls).mkdir(parents=True)
        for image in sorted((data / cls).iterdir())[:2]:
            (test_only / cls / image.name).write_bytes(image.read_bytes())
    assert main(["evaluate", str(run.path), str(test_only)]) == 0
    assert "warning" not in capsys.readouterr().out, "data the fit never read is not flagged"


def test_fitted_rows_note_finds_the_data_from_another_folder(tmp_path, monkeypatch):
    """config.yaml keeps paths as given where the fit ran; evaluated from elsewhere, the run's folder places them."""
    from headstart.evaluate import fitted_rows_note

    (tmp_path / "proj" / "runs").mkdir(parents=True)
    (tmp_path / "proj" / "rows.csv").write_text("a,y\n")
    run = _fake_run(tmp_path / "proj" / "runs" / "r", "rows.csv", "runs/r", {"train": 20, "val": 5, "test": 5})
    monkeypatch.chdir(tmp_path)
    note = fitted_rows_note(Path("proj/runs/r"), "proj/rows.csv", 30)
    assert note and "25 of the 30 rows" in note and "5 test rows" in note
    assert fitted_rows_note(run, tmp_path / "proj" / "rows.csv", 5) is None, "its test rows alone: nothing learned"
    assert fitted_rows_note(run, tmp_path / "other.csv", 30) is None


def test_rank_fit_best_fits_with_the_strategy_given(tiny_images, tmp_path):
    """The CLI dropped --strategy: `rank --fit-best --strategy linear-probe` fitted the winner with auto."""
    from headstart.cli import main

    out = tmp_path / "r"
    assert main(["rank", str(tiny_images), "--models", "efficientnet_lite0", "--fit-best", "--strategy", "linear-probe",
                 "--image-size", "64", "--num-workers", "0", "--no-progress", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert yaml.safe_load((out / "fit" / "config.yaml").read_text())["strategy"] == "linear-probe"


def test_rank_checks_every_candidate_before_the_first_feature_pass(tiny_images, tmp_path, monkeypatch):
    """A typo or another modality's body last in --models failed only after the other bodies' passes."""
    import headstart.select.rank as rank_module

    def no_pass(*args, **kwargs):
        raise AssertionError("a feature pass ran before the candidates were checked")

    monkeypatch.setattr(rank_module, "features_of", no_pass)
    for models, error in (("efficientnet_lite0,efficientnet_lite9", "unknown backbone 'efficientnet_lite9'"),
                          ("efficientnet_lite0,minilm-l6", "minilm-l6 reads text data")):
        with pytest.raises(UserError, match=error):
            hs.rank(str(tiny_images), models, out=str(tmp_path / "r"), force=True, image_size=64, progress=False)
    with pytest.raises(UserError, match="--weights names one body's weights"):
        hs.rank(str(tiny_images), "efficientnet_lite0,efficientnet_lite1", weights="w.safetensors", out=str(tmp_path / "w"))


def test_rank_scores_a_body_named_twice_once(tiny_images, tmp_path):
    rows = hs.rank(str(tiny_images), "efficientnet_lite0, efficientnet_lite0", out=str(tmp_path / "r"), image_size=64,
                   progress=False, num_workers=0, cache_dir=str(tmp_path / "cache"))
    assert [r["model"] for r in rows] == ["efficientnet_lite0"]


def test_verdict_says_when_the_gap_is_within_chance_on_the_test_split():
    """1 of 6 test images apart was called "transfer ... helped" with no word on how little that shows."""
    from headstart.select.compare import _verdict, chance_margin

    row = {"transfer": {"test": 4 / 6}, "scratch": {"test": 3 / 6}, "baseline": {"name": "raw pixels", "test": 2 / 6}}
    small = _verdict(row, "m", n_test=6)
    assert not small["negative_transfer"] and small["within_chance"]
    assert "helped" in small["message"] and "0.3333. On 6 test examples a gap under" in small["message"]
    assert "within_chance" not in _verdict(row, "m", n_test=2000), "600 of 2000 apart is clear"
    assert "within_chance" not in _verdict(row, "m"), "no count (R², F1): no claim either way"
    assert chance_margin([0.99, 0.97], 270) < 0.03 < chance_margin([0.67, 0.5], 6)


def test_negative_transfer_on_a_table_suggests_no_input_size():
    """A table's verdict told the user to try --image-size or --max-length."""
    from headstart.select.compare import _verdict

    row = {"transfer": {"test": 0.80}, "scratch": {"test": 0.81}, "baseline": {"name": "ridge", "test": 0.82}}
    assert "--image-size" not in _verdict(row, "run:src", modality="tabular")["message"]
    assert "a larger input (--max-length)" in _verdict(row, "minilm-l6", modality="text")["message"]


def test_compare_summarises_a_multilabel_run_by_micro_f1():
    """compare on label sets ("a;b") fitted both arms, then failed on KeyError 'accuracy'."""
    from headstart.select.compare import _arm_summary

    class Run:
        history = [{"stage": "finetune", "epoch": 0.0, "val_f1": 0.1}, {"stage": "finetune", "epoch": 1.0, "val_f1": 0.4},
                   {"stage": "finetune", "epoch": 2.0, "val_f1": 0.6}]
        metrics = {"f1_micro": 0.55, "seconds": 1.0}

    summary = _arm_summary(Run(), "multilabel")
    assert summary["test"] == 0.55 and summary["curve"] == [0.4, 0.6] and summary["asymptote"] == 0.6


def test_compare_runs_on_label_sets(tmp_path):
    """The whole command on a multi-label manifest of tiny images: micro F1 for both arms, no baseline (it would score
    whole label sets as classes)."""
    from conftest import make_images

    images = make_images(tmp_path / "imgs", per_class=10)
    rows = ["path,label"]
    for i, path in enumerate(sorted(images.rglob("*.png"))):
        colour = path.parent.name
        rows.append(f"{path.relative_to(tmp_path)},{colour if i % 3 else colour + ';bright'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    result = hs.compare(str(tmp_path / "m.csv"), fractions="1", strategy="linear-probe", out=str(tmp_path / "cmp"),
                        image_size=64, epochs=1, batch_size=16, progress=False, num_workers=0,
                        cache_dir=str(tmp_path / "cache"))
    assert result["task"] == "multilabel" and result["score"] == "f1_micro"
    full = result["fractions"]["1"]
    assert 0 <= full["transfer"]["test"] <= 1 and "baseline" not in full


def test_compare_plot_names_the_fractions_and_whole_epochs(monkeypatch):
    """The fraction axis read "5x10^-1, 6x10^-1, ..." (log ticks) and the epoch axis 1.25, 1.5, ..."""
    import headstart.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    arm = {"test": 0.7, "curve": [0.5, 0.6, 0.7]}
    results = {"score": "accuracy", "n_test": 6, "verdict": {"message": "transfer from m helped: 0.7. On 6 test "
                                                                        "examples ...", "within_chance": True},
               "fractions": {"0.5": {"transfer": arm, "scratch": {"test": 0.5, "curve": [0.4, 0.5]}},
                             "1": {"transfer": arm, "scratch": {"test": 0.5, "curve": [0.4, 0.5]}}}}
    plots.plot_compare(results, "unused.png")
    ax_epochs, ax_frac = figures[0].axes
    assert [t.get_text() for t in ax_frac.get_xticklabels()] == ["0.5", "1"]
    assert all(float(t) == int(float(t)) for t in ax_epochs.get_xticks())
    assert "head on frozen features" in ax_epochs.get_xlabel()
    assert "within chance on 6 test examples" in figures[0]._suptitle.get_text()
    assert np.isfinite(ax_frac.get_xlim()).all()


def test_rank_of_an_untrained_body_is_the_same_on_every_run(tmp_path):
    """The table mlp's random layers were drawn unseeded: two identical `rank` commands gave LogME -0.648 and -0.654
    (and cached features of a new body each time)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    lines = ["a,b,c,y"] + [f"{a:.4f},{b:.4f},{c:.4f},{a + 2 * b + rng.normal():.4f}" for a, b, c in x]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    first, second = (hs.rank(str(tmp_path / "t.csv"), "mlp", target="y", out=str(tmp_path / f"r{i}"), progress=False,
                             cache_dir=str(tmp_path / "cache"))[0] for i in (1, 2))
    assert (first["logme"], first["knn"], first["probe"]) == (second["logme"], second["knn"], second["probe"])
    assert second["features_computed"] == 0, "the second rank reads the first one's features back"


def test_report_does_not_show_a_gain_within_chance_as_a_clear_one(tmp_path):
    from headstart.report import render_report

    arm = {"test": 4 / 6, "start": 0.5, "slope": 0.1, "asymptote": 0.7, "curve": [0.5, 0.7]}
    compare = {"score": "accuracy", "n_test": 6, "fractions": {"1": {"train_size": 20, "transfer": arm, "scratch": arm}},
               "verdict": {"negative_transfer": False, "within_chance": True,
                           "message": "transfer from m helped: 0.6667 vs scratch 0.5000. On 6 test examples ..."}}
    (tmp_path / "compare.json").write_text(json.dumps(compare))
    page = render_report(tmp_path).read_text()
    assert '<p class="warn">transfer from m helped' in page
