"""`headstart pretrain`: a body trained self-supervised on unlabeled inputs, reused by `fit --model run:DIR`."""
import csv
import dataclasses
import json
import math

import pandas as pd
import pytest
import torch
import yaml

import headstart as hs
from headstart.backbones import create_backbone
from headstart.backbones.tabular import ColumnEncoder, CorruptedRows
from headstart.cli import main
from headstart.config import PretrainConfig
from headstart.errors import UserError
from headstart.train.self_supervised import TwoViews, nt_xent

from conftest import make_images
from test_audio import make_tones
from test_tabular import make_table


def test_nt_xent_is_low_when_each_view_finds_its_partner():
    n, tau = 4, 0.1
    views = torch.eye(n)  # n inputs, orthogonal; rows i and i + n are its two views
    matched = nt_xent(torch.cat([views, views]), tau)
    # the partner at similarity 1, the 2n - 2 others at 0: -log(e^(1/tau) / (e^(1/tau) + (2n - 2)))
    assert matched.item() == pytest.approx(-math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2)), rel=1e-3)  # float32
    shuffled = nt_xent(torch.cat([views, views[[1, 2, 3, 0]]]), tau)  # each view's twin is another input's
    assert shuffled.item() > 10 * matched.item()


def test_held_out_views_are_the_same_pairs_on_every_access(tmp_path):
    paths = [str(p) for p in sorted((make_images(tmp_path / "red", classes=("red",), per_class=2) / "red").iterdir())]
    body = create_backbone("efficientnet_lite0")
    views = body.views(paths, PretrainConfig(data=""))
    fixed, drawn = TwoViews(views, seed=3), TwoViews(views)
    a, b = fixed[1]
    assert not torch.equal(a, b)  # still two different views of the input
    assert all(torch.equal(x, y) for x, y in zip(fixed[1], fixed[1]))  # ... drawn alike each epoch
    assert not torch.equal(fixed[0][0], fixed[1][0])
    assert not torch.equal(drawn[1][0], drawn[1][0])  # training views: a new draw on each access


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    inputs = make_images(root / "unlabeled", per_class=16)
    (inputs / "red" / "broken.png").write_bytes(b"not an image")
    run = hs.pretrain(str(inputs), out=str(root / "pre"), image_size=64, epochs=3, batch_size=16, progress=False)
    return run, root, inputs


def test_pretrain_trains_the_body_and_writes_a_run(pretrained):
    run, root, _ = pretrained
    for name in ("config.yaml", "data.json", "metrics.json", "history.csv", "history.png", "model/model.json"):
        assert (run.path / name).is_file(), name
    metrics = json.loads((run.path / "metrics.json").read_text())
    note = metrics["pretrain"]
    assert metrics["inputs"] == {"train": 43, "held_out": 5} and metrics["skipped"] == 1  # 48 readable, 10 % held out
    assert "caveat" not in metrics  # an ImageNet classifier's body: nothing to warn about
    assert [s["where"] for s in json.loads((run.path / "data.json").read_text())["skipped"]][0].endswith("broken.png")
    assert note["held_out_loss_best"] < note["held_out_loss_first"]  # the views of a square grew easier to pair
    config = yaml.safe_load((run.path / "config.yaml").read_text())
    assert config["strategy"] == "pretrain" and config["temperature"] == 0.1 and config["resolved"]["input_size"] == 64
    original = create_backbone("efficientnet_lite0").state_dict()
    body = hs.load(run.path).model.backbone.state_dict()
    moved = [k for k in original if "running_mean" in k and not torch.allclose(original[k], body[k])]
    assert moved  # BatchNorm trained on batch statistics: its running means moved to the squares
    assert max((original[k] - body[k]).abs().max().item() for k in original if k.endswith("conv_stem.weight")) > 0


def test_fit_reuses_the_pretrained_body_and_the_body_alone_cannot_predict(pretrained, tmp_path):
    run, root, inputs = pretrained
    labeled = make_images(tmp_path / "labeled", per_class=12, seed=3)
    fitted = hs.fit(str(labeled), model=f"run:{run.path}", strategy="linear-probe", out=str(tmp_path / "fit"), progress=False)
    assert fitted.classes == ["blue", "green", "red"] and fitted.metrics["accuracy"] > 0.8
    with pytest.raises(UserError, match="no head to predict with: fit labeled data from it with --model run:"):
        hs.load(run.path).predict([str(inputs / "red" / "red_000.png")])
    with pytest.raises(UserError, match="no head"):
        hs.export(run.path)
    scores = hs.rank(str(labeled), ["efficientnet_lite0", f"run:{run.path}"], image_size=64, progress=False)
    assert sorted(row["model"] for row in scores) == sorted(["efficientnet_lite0", f"run:{run.path}"])  # summary's advice


def test_text_pretrain_reads_the_text_column(tmp_path):
    texts = [f"the {w} {n} arrived late again" for w in ("parcel", "card", "refund", "transfer") for n in range(6)]
    csv = tmp_path / "texts.csv"
    csv.write_text("id,body\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))
    run = hs.pretrain(str(csv), text_column="body", out=str(tmp_path / "pre"), epochs=1, batch_size=8, holdout=0.2,
                      progress=False)
    assert run.metrics["inputs"] == {"train": 19, "held_out": 5} and run.model.modality == "text"
    assert "sentence-transformers body" in run.metrics["caveat"]  # minilm-l6 was trained contrastively already
    assert hs.load(run.path).model.backbone.sentence_model  # ... and so is its saved body, pre-trained again
    with pytest.raises(UserError, match="no column 'text'"):
        hs.pretrain(str(csv), model="minilm-l6", out=str(tmp_path / "again"), epochs=1, progress=False)


def test_cli_pretrain_hides_and_refuses_label_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    assert "--temperature" in text and "--holdout" in text and "--strategy" not in text and "--label-column" not in text
    inputs = make_images(tmp_path / "unlabeled", per_class=4)
    assert main(["pretrain", str(inputs), "--strategy", "setfit"]) == 2
    assert "pretrain has no labels or strategy: strategy do not apply" in capsys.readouterr().err
    assert main(["pretrain", str(make_images(tmp_path / "few", classes=("red",), per_class=5))]) == 2
    assert "needs at least 8" in capsys.readouterr().err
    table = make_table(tmp_path / "rows.csv")  # no text column, no --target: nothing says it is a table
    assert main(["pretrain", str(table), "--out", str(tmp_path / "t")]) == 2
    assert "cannot tell what kind of inputs these are; pass --model" in capsys.readouterr().err


def test_cli_pretrain_names_the_next_steps(tmp_path, capsys):
    inputs = make_images(tmp_path / "unlabeled", per_class=4)
    assert main(["pretrain", str(inputs), "--out", str(tmp_path / "pre"), "--image-size", "64", "--epochs", "1",
                 "--flip", "off", "--crop-scale", "0.8", "--color", "1", "--blur", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"headstart rank LABELED --models efficientnet_lite0,run:{tmp_path / 'pre'}" in out
    assert "  body      efficientnet_lite0, input" in out  # no "from": the body is the named one
    config = yaml.safe_load((tmp_path / "pre" / "config.yaml").read_text())
    assert (config["crop_scale"], config["colour"], config["blur"]) == (0.8, 1.0, 0.0)  # --color is --colour's alias
    assert main(["pretrain", str(inputs), "--out", str(tmp_path / "bad"), "--blur", "2"]) == 2
    assert "--blur is a probability" in capsys.readouterr().err


def test_audio_pretrain_sizes_its_clips_from_the_inputs(tmp_path):
    clips = make_tones(tmp_path / "tones", per_class=4)
    run = hs.pretrain(str(clips), out=str(tmp_path / "pre"), epochs=1, batch_size=8, image_size=64, progress=False)
    resolved = yaml.safe_load((run.path / "config.yaml").read_text())["resolved"]
    assert run.model.modality == "audio" and resolved["clip_seconds_reason"].startswith("auto: 95th percentile")


@pytest.mark.parametrize("cache_gb", ["4", "0"])  # cached uint8 tensors and the uncached PIL path alike
def test_image_views_distort_colour_and_blur_but_a_fit_does_not(tmp_path, monkeypatch, cache_gb):
    monkeypatch.setenv("HEADSTART_IMAGE_CACHE_GB", cache_gb)
    paths = [str(p) for p in sorted((make_images(tmp_path / "red", classes=("red",), per_class=1, size=64) / "red").iterdir())]
    body = create_backbone("efficientnet_lite0")
    body.preprocess = dataclasses.replace(body.preprocess, input_size=64)
    mean, std = torch.tensor(body.preprocess.mean).view(3, 1, 1), torch.tensor(body.preprocess.std).view(3, 1, 1)

    def draws(dataset, n=60):
        return [dataset[0] * std + mean for _ in range(n)]  # back to 0-1 pixels

    def grey(x):
        return torch.allclose(x[0], x[1], atol=1e-3) and torch.allclose(x[1], x[2], atol=1e-3)

    coloured = draws(body.views(paths, PretrainConfig(data="", colour=1.0, blur=0.0)))
    assert 0 < sum(map(grey, coloured)) < len(coloured)  # greyed with p 0.2: 0.8^60 to draw none
    assert min(x[0].mean() - x[1].mean() for x in coloured) < 0.05  # the jitter's hue can turn red away from red
    plain = draws(body.views(paths, PretrainConfig(data="", colour=0.0, blur=0.0)))
    fitting = draws(body.dataset(paths, train=True))  # a fit's augmentation: crops and flips, colour left as it is
    for x in plain + fitting:
        assert not grey(x) and x[0].mean() - x[1].mean() > 0.3
    blurred = draws(body.views(paths, PretrainConfig(data="", colour=0.0, blur=1.0)))
    noise = lambda xs: sum(x.std(dim=(1, 2)).mean() for x in xs) / len(xs)  # noqa: E731 - the squares' pixel noise
    assert noise(blurred) < 0.8 * noise(plain)
    with pytest.raises(UserError, match="--blur"):
        PretrainConfig(data="", blur=1.5)


def test_table_views_replace_whole_columns_with_other_rows_values(tmp_path):
    rows = [{k: (None if pd.isna(v) else v) for k, v in r.items() if k not in ("y", "label")}
            for r in pd.read_csv(make_table(tmp_path / "rows.csv")).to_dict("records")]
    encoder = ColumnEncoder().fit(rows)
    features = encoder.transform(rows)
    spans = encoder.spans()
    assert [s.stop - s.start for s in spans] == [2, 1, 4, 1]  # a with its gap flag, b, c one-hot + other, d
    views = CorruptedRows(features, spans, rate=0.3)
    changed = 0
    for i in range(len(views)):
        view = views[i]
        for span in spans:  # each column is the row's own, or another row's whole (a one-hot block stays one-hot)
            assert (features[:, span] == view[span]).all(dim=1).any()
        changed += not torch.equal(view, features[i])
    assert 0.5 * len(views) < changed < len(views)  # 1 - 0.7^4 = 76 % of rows lose at least one column (if donors differ)


def test_table_pretrain_leaves_the_label_out_and_a_fit_reuses_the_body(tmp_path):
    table = make_table(tmp_path / "rows.csv")
    pd.read_csv(table).drop(columns=["y"]).to_csv(table, index=False)
    run = hs.pretrain(str(table), model="mlp", target="label", out=str(tmp_path / "pre"), progress=False)
    config = yaml.safe_load((run.path / "config.yaml").read_text())
    assert run.model.backbone.preprocess.names == ["a", "b", "c", "d"]  # the label column is not a feature
    assert config["resolved"]["training_defaults"]["epochs"] == 50 == run.metrics["pretrain"]["epochs_run"]
    assert run.metrics["pretrain"]["held_out_loss_best"] < run.metrics["pretrain"]["held_out_loss_first"]
    fitted = hs.fit(str(table), target="label", model=f"run:{run.path}", out=str(tmp_path / "fit"), progress=False)
    resolved = yaml.safe_load((fitted.path / "config.yaml").read_text())["resolved"]
    assert fitted.metrics["accuracy"] > 0.75 and "encoder kept from the reused body" in resolved["input"]
    forgot = hs.pretrain(str(table), model="mlp", epochs=1, out=str(tmp_path / "forgot"), progress=False)  # no --target
    with pytest.raises(UserError, match="trained with label as an input column, which this fit predicts.* --target label"):
        hs.fit(str(table), target="label", model=f"run:{forgot.path}", out=str(tmp_path / "fit2"), progress=False)


def test_a_pretrain_stopped_mid_way_resumes_from_its_last_saved_epoch(tmp_path, monkeypatch, capsys):
    from headstart.train import callbacks, self_supervised

    monkeypatch.setattr(callbacks, "CHECKPOINT_EVERY_S", 0.0)  # save every epoch (a minute apart on real runs)
    begun = []

    class StopAfterSecondSave(callbacks.EpochCheckpoint):
        """Records the epochs begun; the stopping run is interrupted right after epoch 2 is saved."""
        stop = True

        def on_train_epoch_start(self, trainer, pl_module):
            begun.append(trainer.current_epoch)

        def on_train_epoch_end(self, trainer, pl_module):
            super().on_train_epoch_end(trainer, pl_module)
            if self.stop and trainer.current_epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(self_supervised, "EpochCheckpoint", StopAfterSecondSave)
    inputs = make_images(tmp_path / "unlabeled", per_class=4)
    out = tmp_path / "pre"
    options = dict(out=str(out), image_size=32, epochs=4, batch_size=8, progress=False)
    with pytest.raises(KeyboardInterrupt):
        hs.pretrain(str(inputs), **options)
    assert (out / "checkpoints" / "self-supervised-1.ckpt").is_file() and not (out / "metrics.json").exists()
    with pytest.raises(UserError, match=r"these differ: temperature 0.2 \(the stopped pretrain's: 0.1\)"):
        hs.pretrain(str(inputs), **options, temperature=0.2, resume=True)
    begun.clear()
    StopAfterSecondSave.stop = False
    run = hs.pretrain(str(inputs), **options, resume=True)
    assert begun == [2, 3], "the two saved epochs are not trained again"
    assert run.metrics["pretrain"]["epochs_run"] == 4
    with open(out / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3, 4]
    assert not (out / "checkpoints").exists(), "a finished run keeps no checkpoint"
    with pytest.raises(UserError, match="holds a finished run: nothing to resume"):
        hs.pretrain(str(inputs), **options, resume=True)
    assert main(["pretrain", str(inputs), "--resume"]) == 2  # no --out: nothing to go on from
    assert "give its --out" in capsys.readouterr().err
    stopped_fit = tmp_path / "fit"
    stopped_fit.mkdir()
    (stopped_fit / ".headstart").write_text("")
    (stopped_fit / "config.yaml").write_text(yaml.safe_dump({"data": str(inputs), "strategy": "two-stage"}))
    with pytest.raises(UserError, match="holds a stopped fit, not a pretrain"):
        hs.pretrain(str(inputs), **{**options, "out": str(stopped_fit)}, resume=True)
