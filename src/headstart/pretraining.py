"""pretrain: a body learns from unlabeled inputs before any label is used, into a run that `fit --model run:DIR` reuses.

Few labels but many unlabeled inputs (or inputs from the domain the model will meet): the body continues its
pre-training on them, self-supervised (train/self_supervised.py: two views of each input told apart from the rest
of the batch), and the labeled fit starts from that body. Whether it helped is a question for the labels, not for
the pre-training loss: `headstart rank LABELED --models BODY,run:OUT` scores both bodies on them before training.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import lightning as L

from headstart.config import PretrainConfig
from headstart.data import MODALITIES, resolve_modality
from headstart.errors import UserError
from headstart.io_utils import write_json, write_text
from headstart.model import TransferModel
from headstart.plots import plot_history
from headstart.progress import format_seconds
from headstart.run import Run
from headstart.rundir import is_launch_primary, prepare_run_dir, remove_if_unused, write_history_csv
from headstart.train.engine import collecting_only_new_objects, release_memory
from headstart.train.self_supervised import SelfSupervised
from headstart.train.stages import run_stage


def pretrain(inputs: str | Path | list, model: str = "auto", out: str | Path | None = None, **options) -> Run | None:
    """`headstart pretrain`: the body of `model` trained self-supervised on unlabeled `inputs` (files, folders, text
    files); returns the Run holding it (None in extra DDP processes). `fit(..., model="run:OUT")` reuses it."""
    PretrainConfig.check_options(options)
    paths = [str(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if not paths:
        raise UserError("no inputs to pre-train on")
    cfg = PretrainConfig(data=paths[0], inputs=paths, model=model, strategy="pretrain", out=str(out) if out else None,
                         **options)
    with collecting_only_new_objects():
        return _pretrain(cfg)


def _pretrain(cfg: PretrainConfig) -> Run | None:
    from headstart.fitting import build_context  # fitting imports the strategies, which a CLI --help never needs

    started = time.perf_counter()
    modality = _modality_of(cfg)
    data = modality.unlabeled(cfg)
    cfg.out = str(cfg.out or Path("runs") / f"pretrain-{Path(cfg.data).stem or 'inputs'}-{time.strftime('%Y%m%d-%H%M%S')}")
    primary = is_launch_primary()
    out = prepare_run_dir(cfg.out, cfg.force, keep=[cfg.inputs, cfg.model]) if primary else Path(cfg.out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        ctx = build_context(cfg, data, progress=cfg.progress and primary)
    except Exception:
        if primary:
            remove_if_unused(out)
        raise
    defaults = cfg.resolved["training_defaults"]
    if "epochs" in defaults:  # not given: the body's pre-training epochs, not its fine-tuning ones
        cfg.epochs = defaults["epochs"] = ctx.backbone.pretrain_epochs
    requested = dataclasses.replace(cfg, resolved={})
    if primary:
        write_text(out / "config.yaml", cfg.to_yaml())
        write_json(out / "data.json", data.summary())
    caveat = ctx.backbone.pretrain_caveat()
    if caveat and primary:
        print(f"headstart pretrain: caveat: {caveat}", flush=True)  # before the wait, not only after it
    stage = SelfSupervised(cfg.temperature)
    ctx.progress.plan(stage.cost(ctx))
    run_stage(stage, ctx)
    if not ctx.is_global_zero:
        return None
    requested.resolved = cfg.resolved
    write_text(out / "config.yaml", requested.to_yaml())
    note = ctx.stage_notes[stage.name]
    model = TransferModel(ctx.backbone, ctx.head, [], cfg.head, ctx.task,
                          {"strategy": "pretrain", "objective": note["objective"], "inputs": len(data.train) + len(data.val)})
    model.data_options = {"text_column": cfg.text_column}
    model.cpu().save(out / "model")
    metrics = {"pretrain": note, "inputs": {"train": len(data.train), "held_out": len(data.val)},
               "skipped": len(data.skipped), "seconds": round(time.perf_counter() - started, 1)}
    if caveat:
        metrics["caveat"] = caveat
    write_json(out / "metrics.json", metrics)
    write_history_csv(out / "history.csv", ctx.history)
    plot_history(ctx.history, out / "history.png")
    print(_summary(cfg, data, note, metrics, out), flush=True)
    ctx.backbone.end_run()
    release_memory()
    return Run(out, model)


def _modality_of(cfg: PretrainConfig):
    """The modality the named body reads, else the one that claims the first input (as `fit` detects data)."""
    try:
        return resolve_modality(cfg)
    except UserError:
        if cfg.modality == "auto" and cfg.model == "auto":
            raise UserError(f"{cfg.data}: cannot tell what kind of inputs these are; pass --model (a body) or --modality "
                            f"({', '.join(MODALITIES.names())})") from None
        raise


def _summary(cfg: PretrainConfig, data, note: dict, metrics: dict, out: Path) -> str:
    first, best = note["held_out_loss_first"], note["held_out_loss_best"]
    held = (f"held-out loss {first:.4f} after epoch 1 -> {best:.4f} at epoch {note['best_epoch']} (kept)"
            if best is not None else "no held-out inputs (--holdout 0): the last epoch is kept")
    return "\n".join([
        "",
        f"headstart pretrain: {', '.join(cfg.inputs)} -> {out}",
        f"  inputs    {data.modality}, {metrics['inputs']['train']} to train on, {metrics['inputs']['held_out']} held out"
        + (f", {len(data.skipped)} unreadable skipped (listed in data.json)" if data.skipped else ""),
        f"  body      {cfg.resolved['model']}" + (f", input {cfg.resolved['input']}" if "input" in cfg.resolved else ""),
        f"  trained   {note['objective']}; {note['epochs_run']} epoch{'s' if note['epochs_run'] != 1 else ''} at lr {note['lr']:.2g}, "
        f"{note['trainable_params']:,} params, {format_seconds(note['seconds'])}",
        f"  judged    {held}",
        *([f"  caveat    {metrics['caveat']}"] if "caveat" in metrics else []),
        "  next      did it help? on labeled data, before training: "
        f"headstart rank LABELED --models {cfg.resolved['model'].split(' ')[0]},run:{out}",
        f"            then: headstart fit LABELED --model run:{out}",
    ])
