"""pretrain: a body learns from unlabeled inputs before any label is used, into a run that `fit --model run:DIR` reuses.

Few labels but many unlabeled inputs (or inputs from the domain the model will meet): the body continues its
pre-training on them, self-supervised (train/self_supervised.py: two views of each input told apart from the rest
of the batch), and the labeled fit starts from that body. Whether it helped is a question for the labels, not for
the pre-training loss: `headstart rank LABELED --models BODY,run:OUT` scores both bodies on them before training.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import lightning as L

from headstart.config import PretrainConfig
from headstart.data import MODALITIES, resolve_modality
from headstart.data.base import split_unlabeled
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
    if cfg.batch_size is not None and cfg.batch_size < 2:  # a default is 32 or more
        raise UserError(f"--batch-size {cfg.batch_size}: each input's views are told apart from the other inputs of "
                        "its batch, and a batch of one has none (its loss is 0: nothing is learned); give 2 or more, "
                        "32 or more where memory allows")
    with collecting_only_new_objects():
        return _pretrain(cfg)


def _pretrain(cfg: PretrainConfig) -> Run | None:
    from headstart.fitting import build_context, check_same_options  # fitting imports the strategies, which --help never needs

    started = time.perf_counter()
    modality = _modality_of(cfg)
    data, duplicates = _without_duplicates(modality.unlabeled(cfg), cfg)
    if cfg.resume and not cfg.out:
        raise UserError("--resume continues a stopped pretrain in its folder: give its --out")
    cfg.out = str(cfg.out or Path("runs") / f"pretrain-{Path(cfg.data).stem or 'inputs'}-{time.strftime('%Y%m%d-%H%M%S')}")
    primary = is_launch_primary()
    out = prepare_run_dir(cfg.out, cfg.force, keep=[cfg.inputs, cfg.model], resume=cfg.resume) if primary else Path(cfg.out)
    if cfg.resume and (out / "config.yaml").exists():
        check_same_options(cfg, PretrainConfig.from_yaml(out / "config.yaml"), out)
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
    ctx.checkpoints = out / "checkpoints"  # the stage saves its epochs there for --resume
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
    if duplicates:
        metrics["duplicates_dropped"] = duplicates
    if caveat:
        metrics["caveat"] = caveat
    write_json(out / "metrics.json", metrics)
    write_history_csv(out / "history.csv", ctx.history)
    plot_history(ctx.history, out / "history.png")
    shutil.rmtree(ctx.checkpoints, ignore_errors=True)  # the run is whole: nothing to resume
    print(_summary(cfg, data, note, metrics, out), flush=True)
    ctx.backbone.end_run()
    release_memory()
    return Run(out, model)


def _without_duplicates(data, cfg: PretrainConfig):
    """The inputs once each, and how many repeats were dropped. A file reached twice (a folder given twice, or with
    its subfolder) or a text repeated is its own negative in a batch, and seen in training and held out alike.
    Table rows are kept as they are: equal rows of a table are data, not a second path to one input."""
    if data.modality not in ("image", "audio", "text"):
        return data, 0
    files = data.modality != "text"
    unique = list({(os.path.realpath(x) if files else x): x for x, _ in data.train + data.val}.values())
    repeats = len(data.train) + len(data.val) - len(unique)
    if not repeats:
        return data, 0
    deduplicated = split_unlabeled(data.modality, unique, data.skipped, cfg)
    deduplicated.info = data.info
    return deduplicated, repeats


def _modality_of(cfg: PretrainConfig):
    """The modality the named body reads, else the one that claims the first input (as `fit` detects data)."""
    try:
        modality = resolve_modality(cfg)
    except UserError:
        if cfg.modality == "auto" and cfg.model == "auto":
            raise UserError(f"{cfg.data}: cannot tell what kind of inputs these are; pass --model (a body) or --modality "
                            f"({', '.join(MODALITIES.names())})") from None
        raise
    _check_inputs_match(cfg, modality.name)
    return modality


TABLE_FILE_READERS = {"text", "tabular"}  # a CSV may be either (a table with a "text" column): the body decides


def _check_inputs_match(cfg: PretrainConfig, reads: str) -> None:
    """Inputs of another kind than the body reads are refused by name: read as the body's kind, a folder of images
    was one text (its name) and a text file no image, each then "too few readable inputs"."""
    for path in map(Path, cfg.inputs):
        kind = next((n for n in MODALITIES.names() if path.exists() and MODALITIES.get(n).claims(path, cfg)), None)
        if kind and kind != reads and {kind, reads} != TABLE_FILE_READERS:
            raise UserError(f"{path} holds {kind} inputs, but --model {cfg.model} reads {reads}: give {reads} inputs, or "
                            f"a body that reads {kind} (--model auto picks one)")


def _summary(cfg: PretrainConfig, data, note: dict, metrics: dict, out: Path) -> str:
    first, best = note["held_out_loss_first"], note["held_out_loss_best"]
    body = cfg.resolved["model"]
    # a run:DIR body is that run's, not the architecture's ImageNet weights: it is what the new body must beat
    start = cfg.model if cfg.model.startswith("run:") else body.split(" ")[0]
    held = (f"held-out loss {first:.4f} after epoch 1 -> {best:.4f} at epoch {note['best_epoch']} (kept)"
            if best is not None else "no held-out inputs (--holdout 0): the last epoch is kept")
    return "\n".join([
        "",
        f"headstart pretrain: {', '.join(cfg.inputs)} -> {out}",
        f"  inputs    {data.modality}, {metrics['inputs']['train']} to train on, {metrics['inputs']['held_out']} held out"
        + (f", {len(data.skipped)} unreadable skipped (listed in data.json)" if data.skipped else "")
        + (f", {metrics['duplicates_dropped']} repeated input(s) dropped" if "duplicates_dropped" in metrics else ""),
        f"  body      {body}" + (f" from {cfg.model}" if cfg.model.startswith("run:") else "")
        + (f", input {cfg.resolved['input']}" if "input" in cfg.resolved else ""),
        f"  trained   {note['objective']}; {note['epochs_run']} epoch{'s' if note['epochs_run'] != 1 else ''} at lr {note['lr']:.2g}, "
        f"{note['trainable_params']:,} params, {format_seconds(note['seconds'])}",
        f"  judged    {held}",
        *([f"  caveat    {metrics['caveat']}"] if "caveat" in metrics else []),
        "  next      did it help? on labeled data, before training: "
        f"headstart rank LABELED --models {start},run:{out}",
        f"            then: headstart fit LABELED --model run:{out}",
    ])
