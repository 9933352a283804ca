"""What each stage trains, and nothing else: discriminative rates, frozen groups, BatchNorm, DDP."""
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from headstart.backbones import create_backbone
from headstart.config import FitConfig
from headstart.data import MODALITIES
from headstart.data.images import load_image_data
from headstart.heads import build_head
from headstart.progress import RunProgress
from headstart.tasks import make_task
from headstart.train.context import FitContext
from headstart.train.feature_cache import FeatureCache
from headstart.train.stages import FineTune


def make_context(data_dir, tmp_path, **options) -> FitContext:
    cfg = FitConfig(data=str(data_dir), image_size=64, epochs=1, batch_size=8, progress=False, num_workers=0, **options)
    data = load_image_data(data_dir)
    backbone = create_backbone("efficientnet_lite0")
    cfg.apply_training_defaults(backbone.default_hparams)
    backbone.preprocess = backbone.preprocess.with_size(64)
    head = build_head("linear", backbone.feature_dim, len(data.classes))
    return FitContext(cfg, data, MODALITIES.get("image"), make_task("classification"), backbone, head, FeatureCache(tmp_path / "cache"), RunProgress(False))


def test_discriminative_rates_grow_from_stem_to_top(tiny_images, tmp_path):
    ctx = make_context(tiny_images, tmp_path, lr=1e-3, lr_mult=10)
    ctx.head_trained = True  # as after two-stage's head stage (a fresh head would learn at --head-lr)
    groups, _ = FineTune(discriminative=True).param_groups(ctx)
    rates = [g["lr"] for g in groups]
    assert rates[0] == pytest.approx(1e-4) and rates[-2] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:-2], rates[1:-1])), rates
    flat, _ = FineTune(discriminative=False).param_groups(ctx)
    assert {g["lr"] for g in flat} == {1e-3}


def _stats(modules):
    return [(m.running_mean.clone(), m.running_var.clone()) for m in modules]


def _norms(group):
    return [m for m in group if isinstance(m, torch.nn.modules.batchnorm._NormBase)]


@pytest.mark.parametrize("bn", ["frozen", "all-frozen", "train"])
def test_frozen_groups_and_their_batchnorm(tiny_images, tmp_path, bn):
    ctx = make_context(tiny_images, tmp_path, freeze_until=3, bn=bn)
    groups = ctx.backbone.layer_groups()
    frozen_norms, live_norms = [m for g in groups[:3] for m in _norms(g)], _norms(groups[-1])
    frozen_convs = [m.weight.clone() for g in groups[:3] for m in g if isinstance(m, torch.nn.Conv2d)]
    before_frozen, before_live = _stats(frozen_norms), _stats(live_norms)
    live_weight = groups[-1][0].weight.clone()

    FineTune(discriminative=True).run(ctx)

    def same(before, modules):
        return all(torch.equal(a[0], m.running_mean) and torch.equal(a[1], m.running_var) for a, m in zip(before, modules))

    assert same(before_frozen, frozen_norms) == (bn != "train"), f"--bn {bn}: running stats of frozen groups"
    assert same(before_live, live_norms) == (bn == "all-frozen"), f"--bn {bn}: running stats of trainable groups"
    assert all(torch.equal(w, m.weight) for w, m in zip(frozen_convs, [m for g in groups[:3] for m in g if isinstance(m, torch.nn.Conv2d)]))
    assert not torch.equal(live_weight, groups[-1][0].weight), "trainable top group must change"
    frozen_bn_affine = [m.weight for m in frozen_norms]
    assert all(p.requires_grad == (bn == "train") for p in frozen_bn_affine)


def test_bn_auto_keeps_pretrained_statistics_only_after_a_trained_head(tiny_images, tmp_path):
    from headstart.train.stages import bn_mode

    ctx = make_context(tiny_images, tmp_path)
    assert ctx.cfg.bn == "auto" and bn_mode(ctx) == "frozen", "a fresh head: BatchNorm of trainable groups trains"
    ctx.head_trained = True
    assert bn_mode(ctx) == "all-frozen"
    live_norms = _norms(ctx.backbone.layer_groups()[-1])
    before = _stats(live_norms)
    FineTune(discriminative=True).run(ctx)
    assert all(torch.equal(a[0], m.running_mean) for a, m in zip(before, live_norms)), "statistics kept"
    assert ctx.cfg.resolved["bn"] == "all-frozen"
    ctx.backbone.pretrained = False  # an untrained body has no statistics worth keeping
    assert bn_mode(ctx) == "frozen"
    assert bn_mode(make_context(tiny_images, tmp_path, bn="train")) == "train", "an explicit mode is used as given"


@pytest.mark.skipif(sys.platform == "win32", reason="gloo DDP test runs on Linux/macOS")
def test_two_process_ddp_fit_on_cpu(tiny_images, tmp_path):
    """Lightning's DDP (gloo) with 2 CPU processes, from the CLI: one run directory, written once, that loads and
    predicts. The strategy is ulmfit, the hardest case for DDP: its locked groups must still take part in gradient
    reduction while the unlocked set grows (two-stage's fine-tuning is the same stage with every group unlocked)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "headstart.cli", "fit", str(tiny_images), "--out", str(out), "--strategy", "ulmfit",
           "--accelerator", "cpu", "--devices", "2", "--image-size", "64", "--epochs", "2", "--head-epochs", "3",
           "--batch-size", "8", "--num-workers", "0", "--no-progress", "--patience", "5", "--ulmfit-factor", "3"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("headstart fit:") == 1, "only rank 0 reports and writes"
    assert "strategy  ulmfit" in result.stdout
    import headstart as hs

    run = hs.load(out)
    stages = run.metrics["stages"]
    assert stages["head"]["solver"].startswith("logistic regression"), "the linear head is solved on cached features"
    assert stages["gradual"]["world_size"] == 2, "fine-tuning ran on both processes"
    assert stages["gradual"]["epochs_run"] == 2
    assert stages["gradual"]["groups_training_per_epoch"][:2] == [1, 2]
    assert stages["gradual"]["lr_factor"] == 3.0
    assert len(run.predict([str(tiny_images / "red")])) == 12


def _validated(best, epoch: int, loss: float, acc: float | None, weight: float):
    """One validation pass as Lightning reports it to BestWeights."""
    from lightning.pytorch.trainer.states import TrainerFn

    metrics = {"val_loss": torch.tensor(loss), **({"val_acc": torch.tensor(acc)} if acc is not None else {})}
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn=TrainerFn.FITTING),
                              callback_metrics=metrics, current_epoch=epoch)
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(net.weight, weight)
    best.on_validation_end(trainer, SimpleNamespace(net=net))


def test_epochs_compete_on_loss_and_the_best_one_with_the_start_on_score():
    """A label-smoothed fine-tune that gets more right, at a higher loss, beats the solved head it started from."""
    from headstart.train.callbacks import BestWeights

    best = BestWeights("val_acc")
    best.seed(0.12, torch.nn.Linear(1, 1, bias=False), 0.96)  # the head: confident, unsmoothed
    _validated(best, 0, 0.50, 0.83, 1.0)
    _validated(best, 1, 0.15, 1.00, 2.0)
    _validated(best, 2, 0.14, 0.99, 3.0)  # the lowest loss of the stage, though epoch 1 was right more often
    _validated(best, 3, 0.16, 1.00, 4.0)
    best.on_fit_end(None, SimpleNamespace(net=torch.nn.Linear(1, 1, bias=False)))
    assert (best.best_epoch, best.best_score, best.best_loss) == (2, pytest.approx(0.99), pytest.approx(0.14))
    assert float(best.state["weight"]) == 3.0

    kept = BestWeights("val_acc")
    head = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(head.weight, 7.0)
    kept.seed(0.30, head, 0.96)
    _validated(kept, 0, 0.20, 0.95, 1.0)  # a lower loss but fewer right: the head stays
    net = torch.nn.Linear(1, 1, bias=False)
    kept.on_fit_end(None, SimpleNamespace(net=net))
    assert kept.best_epoch == -1 and float(net.weight.detach()) == 7.0

    by_loss = BestWeights(None)  # regression: the loss alone
    by_loss.seed(0.45, torch.nn.Linear(1, 1, bias=False))
    _validated(by_loss, 0, 0.5, None, 1.0)
    _validated(by_loss, 1, 0.4, None, 2.0)
    by_loss.on_fit_end(None, SimpleNamespace(net=torch.nn.Linear(1, 1, bias=False)))
    assert by_loss.best_epoch == 1


def test_fine_tuning_stops_on_its_own_epochs_not_the_heads_loss(tiny_images, tmp_path):
    """Every fine-tuning epoch worse than the head must not stop the stage after `patience` epochs while it still improves."""
    import headstart as hs

    run = hs.fit(str(tiny_images), strategy="two-stage", out=str(tmp_path / "run"), image_size=64, head_epochs=10,
                 epochs=4, patience=1, label_smoothing=0.9, batch_size=8, progress=False, num_workers=0)
    rows = [r for r in run.history if r["stage"] == "finetune" and r["epoch"] > 0]
    losses = [r["val_loss"] for r in rows]
    assert min(losses) > run.metrics["stages"]["head"]["best_val_loss"], "heavy smoothing keeps every epoch above the head"
    assert len(rows) >= 2, "a patience counted from the head's loss would have stopped after epoch 1"
    if len(rows) < 4:  # stopped early: only because its own loss stopped improving
        assert losses[-1] >= min(losses[:-1]), losses


def test_fine_tuning_runs_its_whole_schedule_unless_a_patience_is_given(tiny_images, tmp_path, monkeypatch):
    """Patience 0 (the default for a pre-trained body): no early stopping in the fine-tuning stage; --patience N adds it."""
    import headstart as hs
    import headstart.train.stages as stages
    from headstart.config import FitConfig
    from lightning.pytorch.callbacks import EarlyStopping

    stoppers = []
    make_trainer = stages.make_trainer

    def recording(cfg, epochs, callbacks, accumulate=1):
        stoppers.append([c.patience for c in callbacks if isinstance(c, EarlyStopping)])
        return make_trainer(cfg, epochs, callbacks, accumulate)

    monkeypatch.setattr(stages, "make_trainer", recording)
    fast = dict(strategy="two-stage", image_size=64, head_epochs=3, epochs=1, batch_size=8, progress=False, num_workers=0)
    run = hs.fit(str(tiny_images), out=str(tmp_path / "whole"), **fast)
    assert stoppers == [[]], "one Lightning stage (the head is solved), fine-tuning, without early stopping"
    assert FitConfig.from_yaml(run.path / "config.yaml").resolved["training_defaults"]["patience"] == 0
    stoppers.clear()
    hs.fit(str(tiny_images), out=str(tmp_path / "stopping"), patience=2, **fast)
    assert stoppers == [[2]]


def test_release_memory_frees_what_a_reference_cycle_holds():
    """A finished Lightning fit is a cycle (trainer <-> module <-> callbacks): its tensors go only when collected."""
    import weakref

    from headstart.train.engine import release_memory

    class Holder:
        pass

    a, b = Holder(), Holder()
    a.other, b.other, a.tensor = b, a, torch.zeros(1000)
    alive = weakref.ref(a)
    del a, b
    release_memory()
    assert alive() is None


def test_adamw_is_fused_on_a_cpu_and_steps_as_the_per_tensor_loop_does():
    from headstart.train.module import adamw

    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(3)]
    steps = {}
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        optimizer = adamw([{"params": params, "lr": 0.1}], 0.01) if fused else torch.optim.AdamW(
            [{"params": params, "lr": 0.1}], weight_decay=0.01)
        assert bool(optimizer.defaults["fused"]) == fused
        for _ in range(3):
            for p in params:
                p.grad = p.detach() ** 2
            optimizer.step()
        steps[fused] = params
    for a, b in zip(steps[True], steps[False]):
        assert torch.allclose(a, b, atol=1e-6), "the fused kernel is the same AdamW"
    assert not torch.allclose(steps[True][0], start[0]), "it stepped"


def test_auto_precision_is_bf16_on_a_cpu_only_where_the_body_and_the_cpu_gain(monkeypatch):
    from headstart.train import engine

    cfg = FitConfig(data="x", accelerator="cpu")
    transformer, cnn = SimpleNamespace(cpu_bf16=True), SimpleNamespace(cpu_bf16=False)
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: True)
    assert engine.resolve_precision(cfg, transformer) == "bf16-mixed"
    assert engine.resolve_precision(cfg, cnn) == "32-true" and engine.resolve_precision(cfg) == "32-true"
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: False)
    assert engine.resolve_precision(cfg, transformer) == "32-true", "emulated bf16 is slower than float32"
    assert engine.resolve_precision(FitConfig(data="x", accelerator="cpu", precision="32-true"), transformer) == "32-true"
    cfg.resolved = {"precision": "bf16-mixed"}
    assert engine.make_trainer(cfg, 1, []).precision == "bf16-mixed", "the trainer uses what the fit resolved"


def test_a_fit_collects_only_what_it_made_and_unfreezes_what_it_froze(monkeypatch):
    import gc
    import weakref

    import headstart.fitting as fitting
    from headstart.train.engine import FROZEN_AT_IMPORT, collecting_only_new_objects

    class Node:
        pass

    # what the process held before: frozen now (CPython 3.12 starts with a few hundred objects frozen, and the
    # first version of this context manager, reading any frozen object as "someone froze first", never froze there)
    with collecting_only_new_objects():
        assert gc.get_freeze_count() > FROZEN_AT_IMPORT + 1000
        new = Node()
        new.self = new
        gone = weakref.ref(new)
        del new
        gc.collect()
        assert gone() is None, "a cycle the fit made is still collected"
        with collecting_only_new_objects():  # nested (tune's trials): the outer freeze stays
            pass
        assert gc.get_freeze_count() > FROZEN_AT_IMPORT + 1000
    assert gc.get_freeze_count() <= FROZEN_AT_IMPORT  # unfrozen: 0 (3.12's start-up objects go with it)

    seen = []
    monkeypatch.setattr(fitting, "_fit", lambda *args: seen.append(gc.get_freeze_count()))
    fitting.fit_config(FitConfig(data="x"))
    assert seen and seen[0] > FROZEN_AT_IMPORT + 1000 and gc.get_freeze_count() <= FROZEN_AT_IMPORT


def test_a_freeze_made_before_the_fit_is_left_to_whoever_made_it():
    import gc

    from headstart.train.engine import FROZEN_AT_IMPORT, collecting_only_new_objects

    gc.freeze()  # a server's pre-fork freeze (the count itself drifts: a frozen object that is freed leaves it)
    try:
        with collecting_only_new_objects():
            pass
        assert gc.get_freeze_count() > FROZEN_AT_IMPORT + 1000, "the fit unfroze the server's objects"
    finally:
        gc.unfreeze()


def test_ctrl_c_in_training_reaches_the_caller_as_keyboard_interrupt(tiny_images, tmp_path):
    """Lightning answers Ctrl-C with sys.exit(1) and leaves SIGINT ignored: the CLI printed nothing and exited 1."""
    import signal

    import lightning as L

    from headstart.fitting import fit_config

    class CtrlC(L.Callback):
        def on_train_batch_start(self, *args):
            raise KeyboardInterrupt

    cfg = FitConfig(data=str(tiny_images), strategy="finetune", out=str(tmp_path / "run"), image_size=32, epochs=1,
                    progress=False)
    with pytest.raises(KeyboardInterrupt):
        fit_config(cfg, callbacks=[CtrlC()])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # a second Ctrl-C still stops


def test_a_fit_stopped_in_fine_tuning_resumes_from_its_last_saved_epoch(tiny_images, tmp_path, monkeypatch):
    import lightning as L

    from headstart.errors import UserError
    from headstart.fitting import fit_config
    from headstart.rundir import RUN_MARK
    from headstart.train import callbacks

    monkeypatch.setattr(callbacks, "CHECKPOINT_EVERY_S", 0.0)  # save every epoch (a minute apart on real fits)

    class Epochs(L.Callback):
        """Records the fine-tuning epochs begun (its trainer runs 3); stops at the third when told to."""

        def __init__(self, stop: bool):
            self.stop, self.begun = stop, []

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.max_epochs == 3:
                self.begun.append(trainer.current_epoch)
                if self.stop and trainer.current_epoch == 2:
                    raise KeyboardInterrupt

    options = dict(data=str(tiny_images), strategy="two-stage", out=str(tmp_path / "run"), image_size=32, epochs=3,
                   head_epochs=5, refit="never", progress=False)
    with pytest.raises(KeyboardInterrupt):
        fit_config(FitConfig(**options), callbacks=[Epochs(stop=True)])
    assert (tmp_path / "run" / "checkpoints" / "finetune-1.ckpt").is_file()
    with pytest.raises(UserError, match=r"these differ: epochs 4 \(the stopped fit's: 3\)"):
        fit_config(FitConfig(**{**options, "epochs": 4, "resume": True}))
    resumed = Epochs(stop=False)
    run = fit_config(FitConfig(**options, resume=True), callbacks=[resumed])
    assert resumed.begun == [2], "the two saved epochs are not trained again"
    assert run.metrics["stages"]["finetune"]["epochs_run"] == 3
    assert [r["epoch"] for r in _history(run) if r["stage"] == "finetune"] == [0, 1, 2, 3]  # 0: the start, validated
    assert not (run.path / "checkpoints").exists(), "a finished run keeps no checkpoint"
    with pytest.raises(UserError, match="holds a finished run: nothing to resume"):
        fit_config(FitConfig(**options, resume=True))
    with pytest.raises(UserError, match="--resume continues a stopped fit in its folder: give its --out"):
        fit_config(FitConfig(**{**options, "out": None, "resume": True}))
    pretrain_folder = tmp_path / "pre"
    pretrain_folder.mkdir()
    (pretrain_folder / RUN_MARK).write_text("")  # as a stopped pretrain leaves its folder
    (pretrain_folder / "config.yaml").write_text(FitConfig(data=str(tiny_images), strategy="pretrain").to_yaml())
    with pytest.raises(UserError, match="holds a stopped pretrain, not a fit"):
        fit_config(FitConfig(**{**options, "out": str(pretrain_folder), "resume": True}))


def _history(run) -> list[dict]:
    import csv

    with open(run.path / "history.csv") as f:
        return [{**row, "epoch": int(row["epoch"])} for row in csv.DictReader(f)]
