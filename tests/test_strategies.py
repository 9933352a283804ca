"""Each fine-tuning strategy trains what it should and nothing else (tiny 64-px images, 1-3 epochs)."""
import json

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch import nn

import headstart as hs
from conftest import make_images
from headstart.backbones import create_backbone
from headstart.cli import main
from headstart.config import FitConfig
from headstart.data import MODALITIES
from headstart.data.images import load_image_data
from headstart.errors import UserError
from headstart.heads import build_head
from headstart.model import TransferModel
from headstart.progress import RunProgress
from headstart.strategies import STRATEGIES
from headstart.strategies.auto import BASELINE_MARGIN, FEW_VALIDATION_ROWS, baseline_margin, decide
from headstart.tasks import make_task
from headstart.train.context import FitContext
from headstart.train.feature_cache import FeatureCache
from headstart.train.module import slanted_triangular
from headstart.train.contrastive import ContrastiveBody, PairBatches, draw_pairs
from headstart.train.feature_cache import extract_features
from headstart.train.stages import FineTune, HeadOnFeatures
from headstart.train.variants import L2SP, BitFit, GradualUnfreeze, LoRA, lora_targets, merge_lora

FAST = dict(image_size=64, head_epochs=10, epochs=1, batch_size=8, progress=False, num_workers=0)


def make_context(data_dir, tmp_path, **options) -> FitContext:
    cfg = FitConfig(data=str(data_dir), **{**FAST, **options})
    data = load_image_data(data_dir)
    backbone = create_backbone("efficientnet_lite0")
    cfg.apply_training_defaults(backbone.default_hparams)
    backbone.preprocess = backbone.preprocess.with_size(64)
    head = build_head("linear", backbone.feature_dim, len(data.classes))
    return FitContext(cfg, data, MODALITIES.get("image"), make_task("classification"), backbone, head,
                      FeatureCache(tmp_path / "cache"), RunProgress(False))


class GroupsWithGradients(L.Callback):
    """Per epoch: the indices of the layer groups whose parameters received a gradient."""

    def __init__(self, groups):
        self.groups, self.per_epoch = groups, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        seen = self.per_epoch.setdefault(trainer.current_epoch, set())
        for i, g in enumerate(self.groups):
            if any(p.grad is not None for m in g for p in m.parameters(recurse=False)):
                seen.add(i)


class StateAtTrainEnd(L.Callback):
    """The net's weights when training ends, before the best epoch's (or the starting point's) are restored."""

    def on_train_end(self, trainer, pl_module) -> None:
        self.state = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()}


def with_callback(stage, callback):
    """The stage with one more (recording) callback."""
    own = stage.callbacks
    stage.callbacks = lambda ctx, task: own(ctx, task) + [callback]
    return stage


def body_weights(backbone, kinds=(nn.Conv2d, nn.Linear)):
    return {n: m.weight.detach().clone() for n, m in backbone.named_modules() if isinstance(m, kinds)}


def test_strategies_registered_and_listed_in_help(capsys):
    assert {"ulmfit", "lp-ft", "bitfit", "l2-sp", "lora", "setfit", "auto"} <= set(STRATEGIES.names())
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    for name in ("ulmfit", "lp-ft", "bitfit", "l2-sp", "lora", "setfit", "auto", "--ulmfit-factor", "--l2sp-alpha",
                 "--lora-rank", "--pair-rounds", "--pair-batch-size"):
        assert name in text, name


def test_slanted_triangular_rises_for_cut_frac_then_decays():
    total, ratio = 200, 32.0
    f = slanted_triangular(total, cut_frac=0.1, ratio=ratio)
    values = [f(t) for t in range(total + 1)]
    peak = int(np.argmax(values))
    assert peak == 20 and values[peak] == pytest.approx(1.0)
    assert values[0] == pytest.approx(1 / ratio) and values[-1] == pytest.approx(1 / ratio)
    assert all(a < b for a, b in zip(values[:peak], values[1:peak + 1])), "rises over the first 10% of steps"
    assert all(a > b for a, b in zip(values[peak:-1], values[peak + 1:])), "then decays linearly"
    assert values[peak + 90] == pytest.approx(0.5 * (1 + 1 / ratio), rel=0.02)  # halfway down the long side


def test_ulmfit_unfreezes_one_group_per_epoch_with_discriminative_rates(tiny_images, tmp_path):
    ctx = make_context(tiny_images, tmp_path, epochs=3, patience=10, lr=1e-3)
    groups = ctx.backbone.layer_groups()
    n = len(groups)
    stage = GradualUnfreeze()
    HeadOnFeatures().run(ctx)  # ULMFiT's head comes first (a fresh head would learn at --head-lr)
    rates = [g["lr"] for g in stage.param_groups(ctx)[0]]
    assert rates[-1] == rates[-2] == pytest.approx(1e-3), "head and top group at lr"
    assert all(b / a == pytest.approx(2.6) for a, b in zip(rates[:-2], rates[1:-1])), "each lower group / 2.6"
    recorder = GroupsWithGradients(groups)
    with_callback(stage, recorder).run(ctx)
    trained = [recorder.per_epoch[e] for e in range(3)]
    assert trained == [{n - 1}, {n - 2, n - 1}, {n - 3, n - 2, n - 1}], trained
    assert ctx.stage_notes["gradual"]["groups_training_per_epoch"] == [1, 2, 3]
    assert [r["lr"] for r in ctx.history if r["stage"] == "gradual" and r["epoch"] > 0][-1] < 1e-3, "STLR decays at the end"


def test_ulmfit_respects_freeze_until(tiny_images, tmp_path):
    ctx = make_context(tiny_images, tmp_path, epochs=2, patience=10, freeze_until=7)  # only the top group may train
    groups = ctx.backbone.layer_groups()
    HeadOnFeatures().run(ctx)
    recorder = GroupsWithGradients(groups)
    with_callback(GradualUnfreeze(), recorder).run(ctx)
    assert recorder.per_epoch[0] == recorder.per_epoch[1] == {len(groups) - 1}


def test_freeze_until_past_the_body_is_refused_before_training(tiny_images, tmp_path):
    groups = len(create_backbone("efficientnet_lite0").layer_groups())
    with pytest.raises(UserError, match=f"freezes every layer group of efficientnet_lite0 .*give at most {groups - 1}"):
        hs.fit(str(tiny_images), freeze_until=groups, out=str(tmp_path / "run"), **FAST)
    assert not (tmp_path / "run").exists(), "nothing was trained or left behind"


def test_lp_ft_one_small_rate_from_the_solved_head(tiny_images, tmp_path):
    ctx = make_context(tiny_images, tmp_path, lr=1e-3)
    head_stage, ft = STRATEGIES.get("lp-ft").stages()
    head_stage.run(ctx)
    rates = [g["lr"] for g in ft.param_groups(ctx)[0]]
    assert len(rates) == len(ctx.backbone.layer_groups()) + 1 and rates == [pytest.approx(1e-4)] * len(rates), \
        "every group, head included, one small rate"
    assert ctx.stage_notes["head"]["solver"].startswith("logistic regression")
    solved = {k: v.clone() for k, v in ctx.head.state_dict().items()}

    class HeadAtStart(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.state = {k: v.detach().cpu().clone() for k, v in pl_module.net.head.state_dict().items()}

    start = HeadAtStart()
    with_callback(ft, start).run(ctx)
    assert all(torch.equal(solved[k], start.state[k]) for k in solved), "fine-tuning starts from the solved head"
    # and it really fine-tuned every layer group (the stem included)
    assert ctx.stage_notes["finetune"]["trainable_params"] == sum(p.numel() for p in ctx.backbone.parameters()) + \
        sum(p.numel() for p in ctx.head.parameters())


def test_bitfit_trains_only_biases_and_norms(tiny_images, tmp_path):
    ctx = make_context(tiny_images, tmp_path, epochs=1, lr=1e-2)
    weights = {f"backbone.{n}.weight" for n in body_weights(ctx.backbone)}
    before = {f"backbone.{k}": v.clone() for k, v in ctx.backbone.state_dict().items()}
    biases = [k for k in before if k.endswith(".bias")]
    assert biases, "efficientnet_lite0's biases are its BatchNorm shifts"
    HeadOnFeatures().run(ctx)
    end = StateAtTrainEnd()
    with_callback(BitFit(), end).run(ctx)
    assert weights and all(torch.equal(before[k], end.state[k]) for k in weights), "conv/linear weights unchanged"
    assert sum(not torch.equal(before[k], end.state[k]) for k in biases) > len(biases) // 2, "biases changed"
    assert ctx.stage_notes["bitfit"]["trainable_params"] < 0.02 * sum(p.numel() for p in ctx.backbone.parameters())


def test_bitfit_with_freeze_until(tiny_images, tmp_path):
    ctx = make_context(tiny_images, tmp_path, freeze_until=4)
    groups, _ = BitFit().param_groups(ctx)
    trainable = {id(p) for g in groups for p in g["params"]}
    below = [p for g in ctx.backbone.layer_groups()[:4] for m in g for p in m.parameters(recurse=False)]
    assert not any(id(p) in trainable for p in below)
    assert len(groups) == 4 + 1, "groups 4..7 (biases, norms) and the head"


def test_l2sp_penalty_starts_at_zero_and_grows(tiny_images, tmp_path):
    ctx = make_context(tiny_images, tmp_path, epochs=2, patience=10, lr=1e-2, l2sp_alpha=0.01, weight_decay=0.05)
    stage = L2SP()
    groups, _ = stage.param_groups(ctx)
    assert all(g["weight_decay"] == 0.0 for g in groups[:-1]) and "weight_decay" not in groups[-1], \
        "no decay towards zero on the body; the head keeps AdamW's"

    class Trace(L.Callback):
        def __init__(self):
            self.values = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with torch.no_grad():
                self.values.append(float(pl_module.penalty()))

    trace = Trace()
    HeadOnFeatures().run(ctx)
    with_callback(stage, trace).run(ctx)
    assert trace.values[0] == 0.0
    assert trace.values[-1] > 0.0 and trace.values[-1] >= max(trace.values[:2])
    logged = [r["train_l2sp"] for r in ctx.history if r["stage"] == "l2-sp" and "train_l2sp" in r]
    assert len(logged) == 2 and logged[-1] > 0, "the penalty is logged per epoch (history.csv)"


def test_lora_targets_cnn_pointwise_and_attention():
    cfg = FitConfig(data="x")
    body = create_backbone("efficientnet_lite0")
    names, how = lora_targets(body, cfg)
    named = dict(body.named_modules())
    assert names and all(isinstance(named[n], nn.Conv2d) and named[n].kernel_size == (1, 1) for n in names), how
    top_only, _ = lora_targets(body, FitConfig(data="x", freeze_until=7))
    top = {id(m) for m in body.layer_groups()[7]}
    assert top_only and set(top_only) < set(names) and all(id(named[n]) in top for n in top_only)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value, self.dense = (nn.Linear(8, 8) for _ in range(4))

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Attention(), Attention()])

        def layer_groups(self):
            return [[m for m in layer.modules() if isinstance(m, nn.Linear)] for layer in self.layers]

    names, how = lora_targets(Body(), cfg)
    assert sorted(names) == ["layers.0.query", "layers.0.value", "layers.1.query", "layers.1.value"], how


def test_lora_keeps_base_weights_and_trains_adapters(tiny_images, tmp_path):
    ctx = make_context(tiny_images, tmp_path, epochs=1, lr=1e-2)
    before = {k: v.clone() for k, v in ctx.backbone.state_dict().items()}
    HeadOnFeatures().run(ctx)
    head_before = {k: v.clone() for k, v in ctx.head.state_dict().items()}
    stage, end = LoRA(merge=False), StateAtTrainEnd()
    with_callback(stage, end).run(ctx)
    state = {k.removeprefix("backbone."): v for k, v in end.state.items() if k.startswith("backbone.")}
    assert state.keys() == ctx.backbone.state_dict().keys()
    adapters = {k: v for k, v in state.items() if "lora_" in k}
    assert adapters and any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k), "adapters trained"
    base = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    assert base.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], base[k])]
    assert not changed, f"the body's own weights and BN statistics must be bit-identical: {changed[:5]}"
    assert any(not torch.equal(head_before[k], end.state[f"head.{k}"]) for k in head_before), "the head trained too"
    assert ctx.stage_notes["lora"]["trainable_params"] == stage.info["adapter_params"] + sum(p.numel() for p in ctx.head.parameters())

    model = TransferModel(ctx.backbone, ctx.head, ctx.data.classes).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        unmerged = model(x)
        assert merge_lora(ctx.backbone) == stage.info["layers"]
        merged = model(x)
    assert not any("lora_" in k for k in model.state_dict())
    assert (unmerged - merged).abs().max() < 1e-3, "merging keeps the function"


def test_lora_fit_saves_a_plain_model_that_loads_and_predicts_identically(tiny_images, tmp_path):
    run = hs.fit(str(tiny_images), strategy="lora", out=str(tmp_path / "run"), lora_rank=4, lr=1e-2, **FAST)
    spec = json.loads((run.path / "model" / "model.json").read_text())
    assert spec["training"]["strategy"] == "lora"
    assert spec["training"]["lora"]["rank"] == 4 and spec["training"]["lora"]["merged"] is True
    assert run.metrics["stages"]["lora"]["lora"]["layers"] > 0
    paths = sorted(str(p) for p in tiny_images.rglob("*.png"))[:8]
    in_memory = run.predict_proba(paths)
    loaded = hs.load(run.path)
    assert not any("lora_" in k for k in loaded.model.state_dict())
    assert np.abs(in_memory - loaded.predict_proba(paths)).max() < 1e-5


def test_auto_rule_branches():
    class Ctx:
        class backbone:
            pretrained = True
            starts_linear = False

        class data:
            task = "classification"

    strong = {"per_class": 8, "chance": 0.34, "probe": 0.97, "knn": 0.95, "probe_val": 0.95}
    assert decide(Ctx, strong)[0] == "linear-probe"
    assert decide(Ctx, strong | {"per_class": 50})[0] == "lp-ft"
    assert decide(Ctx, strong | {"per_class": 500})[0] == "two-stage"
    assert decide(Ctx, strong | {"probe": 0.5})[0] == "setfit"  # few examples, features that do not separate yet
    assert decide(Ctx, strong | {"probe": 0.5, "per_class": 500})[0] == "two-stage"
    unfit = strong | {"probe_val": 0.6, "knn": 0.55, "baseline": 0.8, "baseline_name": "raw pixels", "val": 300}
    picked, reason = decide(Ctx, unfit)
    assert picked == "two-stage" and "raw pixels" in reason
    # the same gap on 10 validation rows is two rows: within noise (2 standard errors ~0.4), no verdict
    assert decide(Ctx, unfit | {"val": 10})[0] == "linear-probe"
    assert baseline_margin(0.96, 0.97, 270) == BASELINE_MARGIN and baseline_margin(0.6, 0.7, 10) > 0.4
    Ctx.backbone.pretrained = False
    assert decide(Ctx, {})[0] == "finetune"
    Ctx.backbone.starts_linear = True  # an untrained wide MLP: the linear model on its raw inputs first
    Ctx.data.val = [None] * FEW_VALIDATION_ROWS
    assert decide(Ctx, {})[0] == "two-stage"
    Ctx.data.val = [None] * (FEW_VALIDATION_ROWS - 1)  # too few to tell a trained body from the linear model
    picked, reason = decide(Ctx, {})
    assert picked == "linear-probe" and f"{FEW_VALIDATION_ROWS - 1} validation rows" in reason


def test_auto_picks_and_records_why(tiny_images, tmp_path):
    run = hs.fit(str(tiny_images), strategy="auto", out=str(tmp_path / "run"), **FAST)
    note = run.metrics["stages"]["auto"]
    assert note["picked"] in STRATEGIES.names() and note["picked"] != "auto" and len(note["reason"]) > 20
    assert {"probe", "knn", "per_class", "baseline"} <= set(note["signals"])
    assert note["picked"] == "linear-probe", note  # ~8 coloured squares per class: a perfect probe
    spec = json.loads((run.path / "model" / "model.json").read_text())
    # 12 per class, a probe: the saved model was refit on train + val, and says so
    assert spec["training"] == {"strategy": "auto", "picked": note["picked"], "refit": "train + val"}


def test_a_fresh_head_learns_at_the_head_rate(tiny_images, tmp_path):
    """finetune trains a random head with the body: at a transformer's 5e-5 it would barely move."""
    ctx = make_context(tiny_images, tmp_path, lr=5e-5, head_lr=3e-3)
    groups, _ = FineTune(discriminative=False).param_groups(ctx)
    assert groups[-1]["lr"] == 3e-3 and {g["lr"] for g in groups[:-1]} == {5e-5}
    ctx.head_trained = True  # a solved head (two-stage, lp-ft) fine-tunes at the top group's rate
    groups, _ = FineTune(discriminative=False).param_groups(ctx)
    assert groups[-1]["lr"] == 5e-5


def test_draw_pairs_same_and_other_class_partners():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 4)
    pairs = draw_pairs(labels, rounds=3, seed=0)
    assert len(pairs) == 2 * 3 * len(labels) and sum(s for *_, s in pairs) == 3 * len(labels)
    for i, j, same in pairs:
        assert i != j and (labels[i] == labels[j]) == bool(same)
    assert {i for i, _, _ in pairs} == set(range(len(labels))), "every example gets partners"
    assert pairs == draw_pairs(labels, 3, 0) and pairs != draw_pairs(labels, 3, 1), "seeded"


def test_pair_batches_run_each_distinct_example_once_with_the_same_gradient():
    items = torch.randn(6, 4)
    pairs = [(0, 1, 1.0), (1, 2, 0.0), (0, 2, 0.0), (3, 0, 1.0), (5, 1, 0.0)]
    x, first, second, same = PairBatches(items, torch.stack)(pairs)
    assert len(x) == 5, "examples 0, 1, 2, 3, 5: each once, 4 never drawn"
    assert torch.equal(x[first], items[[i for i, _, _ in pairs]]) and torch.equal(x[second], items[[j for _, j, _ in pairs]])

    def grad(a, b):
        body = torch.nn.Linear(4, 3)
        torch.nn.init.constant_(body.weight, 0.1), torch.nn.init.constant_(body.bias, 0.0)
        body.weight.data += torch.arange(12.0).reshape(3, 4) / 20
        loss = torch.nn.functional.mse_loss(torch.nn.functional.cosine_similarity(body(a[0])[a[1]], body(b[0])[b[1]]), same)
        loss.backward()
        return body.weight.grad

    everything = torch.arange(len(pairs))  # the partners stacked as they come, repeats and all
    naive = grad((items[[i for i, _, _ in pairs]], everything), (items[[j for _, j, _ in pairs]], everything))
    assert torch.allclose(grad((x, first), (x, second)), naive, atol=1e-6)


def _class_margin(ctx) -> float:
    """Mean cosine similarity of same-class training pairs minus that of other-class pairs."""
    inputs, labels = [x for x, _ in ctx.data.train], torch.tensor([y for _, y in ctx.data.train])
    feats = torch.nn.functional.normalize(extract_features(ctx.backbone, inputs, 16, torch.device("cpu"), 0), dim=1)
    sim, same = feats @ feats.T, labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    return float(sim[same & off_diagonal].mean() - sim[~same].mean())


def test_setfit_pair_stage_separates_classes_in_the_body_and_leaves_the_head(tiny_images, tmp_path):
    ctx = make_context(tiny_images, tmp_path, pair_rounds=4)
    head_before = {k: v.clone() for k, v in ctx.head.state_dict().items()}
    weights_before, margin_before = ctx.backbone.weights_id, _class_margin(ctx)
    ContrastiveBody().run(ctx)
    assert _class_margin(ctx) > margin_before + 0.02, "same-class embeddings closer, other-class ones further apart"
    assert all(torch.equal(v, ctx.head.state_dict()[k]) for k, v in head_before.items()), "the head waits for its solve"
    note = ctx.stage_notes["pairs"]
    assert note["pairs"] == 2 * 4 * len(ctx.data.train) and note["positive_pairs"] == note["pairs"] // 2
    assert ctx.backbone_changed and ctx.backbone.weights_id.startswith(weights_before + "-pairs-")
    computed = ctx.cache.computed
    HeadOnFeatures().run(ctx)  # features of the changed body, not the pre-trained body's cached ones
    assert ctx.cache.computed == computed + len(ctx.data.train) + len(ctx.data.val)


def test_setfit_fit_saves_loads_and_predicts_identically(tiny_images, tmp_path):
    run = hs.fit(str(tiny_images), strategy="setfit", pair_rounds=2, out=str(tmp_path / "run"), **FAST)
    # 12 images per class: few labels, and neither stage chooses anything on validation; with a test split to score
    # it, the fit trains once, on train + val (no train-only pass first)
    assert [r["stage"] for r in run.history] == ["pairs", "head"] and run.metrics["refit"]["fitted_once"]
    assert "train_pair_loss" in run.history[0] and run.metrics["stages"]["pairs"]["pairs"] == 2 * 2 * run.metrics["refit"]["rows"]
    assert run.metrics["stages"]["pairs"]["pairs_per_step"] == 32, "a CNN's pair steps: the generic default, not --batch-size 8"
    sizes = json.loads((run.path / "data.json").read_text())["sizes"]
    assert run.metrics["stages"]["augment"]["images"] == sizes["val"], "the augmentation check ran before val joined training"
    paths = sorted(str(p) for p in tiny_images.rglob("*.png"))[:8]
    assert np.abs(run.predict_proba(paths) - hs.load(run.path).predict_proba(paths)).max() < 1e-5


def test_setfit_refuses_what_it_cannot_pair(tiny_images, tmp_path):
    with pytest.raises(UserError, match="single-label classification"):
        hs.fit(str(tiny_images), strategy="setfit", task="multilabel", out=str(tmp_path / "ml"), **FAST)
    with pytest.raises(UserError, match="--lr auto"):
        hs.fit(str(tiny_images), strategy="setfit", lr="auto", out=str(tmp_path / "auto"), **FAST)


def test_cli_setfit_with_pair_rounds(tiny_images, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(tiny_images), "--strategy", "setfit", "--pair-rounds", "2", "--pair-batch-size", "4", "--out",
                 str(out), "--image-size", "64", "--batch-size", "8", "--num-workers", "0", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "pairs     " in said and "through the pair-trained backbone, frozen for the head, in" in said
    note = json.loads((out / "metrics.json").read_text())["stages"]["pairs"]
    sizes = json.loads((out / "data.json").read_text())["sizes"]
    rows = sizes["train"] + sizes["val"]  # few labels and a test split: one fit, on train + val
    assert note["rounds_per_example"] == 2 and note["pairs"] == 2 * 2 * rows, "2 same- and 2 other-class partners each"
    assert note["pairs_per_step"] == 4 and note["steps"] == -(-note["pairs"] // 4), "the pair stage steps every 4 pairs"
    assert yaml.safe_load((out / "config.yaml").read_text())["pair_rounds"] == 2


# ---- refit on train + val ----

def test_refit_learns_from_validation_rows_and_is_scored_on_test(tiny_images, tmp_path):
    kept = hs.fit(str(tiny_images), strategy="linear-probe", refit="never", out=str(tmp_path / "kept"), **FAST)
    refit = hs.fit(str(tiny_images), strategy="linear-probe", out=str(tmp_path / "refit"), **FAST)
    sizes = json.loads((refit.path / "data.json").read_text())["sizes"]
    note = refit.metrics["refit"]
    assert "refit" not in kept.metrics and note["rows"] == sizes["train"] + sizes["val"] and "smallest class" in note["reason"]
    assert refit.metrics["split"] == "test" and refit.metrics["n"] == sizes["test"] and note["fitted_once"]
    head = lambda run: run.model.head[-1].weight.detach()  # noqa: E731
    assert not torch.allclose(head(kept), head(refit)), "the validation rows changed the solved head"
    paths = sorted(str(p) for p in tiny_images.rglob("*.png"))[:6]
    assert np.abs(refit.predict_proba(paths) - hs.load(refit.path).predict_proba(paths)).max() < 1e-5, "the refit is what was saved"
    assert [r["stage"] for r in refit.history] == ["head"], "one fit, on train + val: no train-only fit before it"
    report = (refit.path / "report.html").read_text()
    assert f"Refit on train + val ({note['rows']} rows)" in report and "fitted on train + val, on the test split" in report
    assert "Refit on train + val" not in (kept.path / "report.html").read_text()


def test_no_refit_when_a_stage_chose_on_validation_or_labels_are_plenty(tiny_images, tmp_path, capsys):
    two_stage = hs.fit(str(tiny_images), strategy="two-stage", out=str(tmp_path / "ts"), **FAST)
    assert "refit" not in two_stage.metrics, "fine-tuning early-stops on validation: a refit would lose that choice"
    assert "--refit always" not in capsys.readouterr().err
    asked = hs.fit(str(tiny_images), strategy="two-stage", refit="always", out=str(tmp_path / "asked"), **FAST)
    assert "refit" not in asked.metrics
    assert "--refit always: the model is not refit on train + val, as its finetune stage" in capsys.readouterr().err
    plenty = make_images(tmp_path / "plenty", per_class=30)  # 30 per class: ~21 in training, not few
    probe = hs.fit(str(plenty), strategy="linear-probe", out=str(tmp_path / "probe"), **FAST)
    assert "refit" not in probe.metrics
    always = hs.fit(str(plenty), strategy="linear-probe", refit="always", out=str(tmp_path / "always"), **FAST)
    assert always.metrics["refit"]["reason"].startswith("--refit always")


def test_refit_without_a_test_split_reports_the_validated_model(tiny_images, tmp_path):
    import shutil

    data = tmp_path / "given"
    for split, take in (("train", slice(0, 8)), ("val", slice(8, 12))):
        for cls in ("red", "green", "blue"):
            (data / split / cls).mkdir(parents=True)
            for f in sorted((tiny_images / cls).iterdir())[take]:
                shutil.copy(f, data / split / cls / f.name)
    kept = hs.fit(str(data), strategy="linear-probe", refit="never", out=str(tmp_path / "kept"), **FAST)
    run = hs.fit(str(data), strategy="linear-probe", out=str(tmp_path / "run"), **FAST)
    assert run.metrics["split"] == "val" and "before the refit" in run.metrics["refit"]["metrics_are"]
    assert run.metrics["accuracy"] == kept.metrics["accuracy"], "val metrics are the validated model's, not the refit's"
    assert run.metrics["refit"]["rows"] == 3 * (8 + 4) and [r["stage"] for r in run.history] == ["head", "refit head"]


def test_cli_refit_flag_reaches_the_fit(tiny_images, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(tiny_images), "--strategy", "linear-probe", "--refit", "never", "--out", str(out), "--image-size",
                 "64", "--batch-size", "8", "--num-workers", "0", "--no-progress"]) == 0
    assert "refit     " not in capsys.readouterr().out
    assert yaml.safe_load((out / "config.yaml").read_text())["refit"] == "never"
    assert "refit" not in json.loads((out / "metrics.json").read_text())
    with pytest.raises(SystemExit):
        main(["fit", str(tiny_images), "--refit", "sometimes"])


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # the step runs outside a Trainer
def test_pair_loss_gradient_is_the_same_on_every_run():
    """The same seed must train the same body: the pair loss's backward may not accumulate in thread order (the
    backward of emb[first] adds with parallel atomics on a CPU once a batch passes 32k values)."""
    from headstart.train.contrastive import PairTask

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(16, 2048)  # 32 pairs x 2048 features: past the CPU kernel's parallel threshold

        def forward_features(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    body = Body()
    task = PairTask(body, [{"params": list(body.parameters()), "lr": 1e-3}], 0.0, 0.0, [])
    # 32 pairs over 20 examples, as a few-label batch repeats them: a row gathers several partners' gradients
    # (two adds commute; three in another order round differently)
    first, second, same = torch.randint(20, (32,)), torch.randint(20, (32,)), torch.rand(32) > 0.5
    pairs = [(int(i), int(j), float(s)) for i, j, s in zip(first, second, same)]
    batch = PairBatches(torch.randn(20, 16), torch.stack)(pairs)

    def gradient():
        body.zero_grad()
        task.training_step(batch, 0).backward()
        return body.proj.weight.grad.clone()

    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))  # the nondeterminism needs more than one thread
    try:
        reference = gradient()
        assert all(torch.equal(gradient(), reference) for _ in range(20))
    finally:
        torch.set_num_threads(threads)
