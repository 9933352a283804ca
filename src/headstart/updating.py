"""update: a run learns from new labeled data (new classes too) without forgetting what it knew.

The run's own recipe (config.yaml) fits the new data from the run's body and head (`--model run:RUN`), with two
guards against forgetting that need no change to the model (Avalanche's Replay and, for the body, a stand-in for
its EWC that needs no Fisher information):
- rehearsal: the run's old training rows, read again from where its config says they are (or --old-data), join the
  new ones (all of them by default, --replay N for a sample), and its validation and test rows join too;
- L2-SP (default strategy): the body is pulled towards the run's weights, not towards zero.
Without the old data (gone, or --replay 0) the run's reference stands in for it: the features and labels of its
held-out rows, which every fit saves for `monitor`. They are features of the run's own body, so the body stays as
it is (linear-probe, the default then) and the head learns the new rows beside them, class-weighted (a few held-out
rows stand for each old class, every row for each new one): feature replay, as SLCA's and FeTrIL's classifier
alignment on a frozen pre-trained body, with real features instead of sampled ones. The updated run's reference
keeps them (fitting.py), so the next update without data still knows the oldest classes.
The old model and the updated one are then both scored on the old test rows and on the new ones: forgetting is
measured, not assumed (metrics.json "update").
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from headstart.backbones.run_source import body_was_trained
from headstart.config import FitConfig
from headstart.data import resolve_modality
from headstart.data.base import LabeledData, check_classes
from headstart.errors import UserError
from headstart.drift import load_reference
from headstart.inference import predict_outputs
from headstart.io_utils import write_json
from headstart.report import render_report
from headstart.run import Run, _device, load
from headstart.strategies import STRATEGIES

# What the run's config.yaml says about its own data and paths, not how to train: not carried to the update.
# adapt_to: the run's head was aligned to that domain already, and an update learns from new labeled rows
NOT_CARRIED = ("data", "model", "strategy", "out", "force", "resume", "weights", "resolved", "adapt_to")


REHEARSAL_STRATEGY, REPLAY_STRATEGY = "l2-sp", "linear-probe"  # the defaults with old rows, and with the reference


def update(run: str | Path | Run, data: str | Path, out: str | Path | None = None, old_data: str | Path | None = None,
           replay: int | None = None, strategy: str | None = None, **options) -> Run | None:
    """`headstart update`: fit `data` from `run`'s model with rehearsal of its old rows (else of its reference's
    features); forgetting measured. `strategy`: l2-sp with old rows, linear-probe without them, unless given."""
    if replay is not None and replay < 0:
        raise UserError(f"--replay is a number of old training rows to rehearse, 0 or more, not {replay}")
    run = run if isinstance(run, Run) else load(run)
    check_updatable(run)
    cfg = carried_config(run, data, out or f"{run.path}-updated", strategy or REHEARSAL_STRATEGY, options)
    check_same_modality(run, cfg)
    return update_with(run, resolve_modality(cfg).load(cfg), cfg, old_data, replay, strategy_given=strategy is not None)


def check_updatable(run: Run) -> None:
    """A pretrain run is a body without labels or a head: nothing to update (its inputs are no labeled data)."""
    if run.model.provenance.get("strategy") == "pretrain":
        raise UserError(f"{run.path} is a pre-trained body (headstart pretrain), with no head or labels to update: "
                        f"fit the labeled data from it with --model run:{run.path}")


def check_same_modality(run: Run, cfg: FitConfig) -> None:
    """New data of another kind than the run's (a text file for an image run) is refused by name: read as the
    run's kind, it failed with that kind's complaint (an image manifest's missing path column)."""
    from headstart.data import MODALITIES

    source = Path(cfg.data)
    if cfg.modality != "auto" or not source.exists():
        return
    kind = next((name for name in MODALITIES.names() if MODALITIES.get(name).claims(source, cfg)), None)
    if kind and kind != run.model.modality:
        raise UserError(f"{cfg.data} holds {kind} data, but {run.path} is a model of {run.model.modality} data: an "
                        f"update learns more of its own kind; for {kind} data fit a {kind} model")


def carried_config(run: Run, data, out, strategy: str, options: dict) -> FitConfig:
    """The run's own recipe (config.yaml) for a fit of `data` from its model; `options` win."""
    FitConfig.check_options(options)
    old_cfg = FitConfig.from_yaml(run.path / "config.yaml")
    carried = {k: v for k, v in dataclasses.asdict(old_cfg).items() if k not in NOT_CARRIED}
    return FitConfig(data=str(data), model=f"run:{run.path}", strategy=strategy, out=str(out), **{**carried, **options})


def update_with(run: Run, new: LabeledData, cfg: FitConfig, old_data=None, replay: int | None = None,
                strategy_given: bool = True) -> Run | None:
    """The update of `run` on data already loaded (rows from anywhere: a loader, pseudo-labels, a stream)."""
    check_updatable(run)
    old, where = _old_data(FitConfig.from_yaml(run.path / "config.yaml"), old_data)
    # the run's classes and the new data's meet only here: "Bees" beside the run's "bees" is a new class, and says so
    merged = check_classes(_merged(new, old, replay, cfg.seed, run), f"{run.path} + {cfg.data}")
    rehearsed = len(merged.train) - len(new.train)
    if not strategy_given and not body_was_trained(run.model):
        cfg.strategy = "auto"  # L2-SP towards a random body's weights keeps nothing: auto's rule for an untrained one
    reference = None if rehearsed else _replayable_reference(run)
    if reference is not None and not strategy_given:
        cfg.strategy = REPLAY_STRATEGY
    unused = reference is not None and not STRATEGIES.get(cfg.strategy).keeps_body()
    if unused:
        reference = None  # a body that trains makes the reference's features another body's
    if reference is not None and old is not None:  # --replay 0: the old held-out rows are in the reference already
        merged = _merged(new, None, replay, cfg.seed, run)
    if reference is not None and merged.task == "classification" and cfg.balance is None:
        # a few held-out rows stand for each old class beside every new row: without class weights the head
        # learns that the new classes are the likely ones (class-incremental learning's bias towards the new)
        cfg.balance = "weights"
    from headstart.fitting import fit_config

    replayed = (reference["features"].float(), reference["labels"].tolist()) if reference is not None else None
    updated = fit_config(cfg, data=merged, replayed=replayed)
    if updated is None:  # an extra DDP process
        return None
    report = {"from": str(run.path), "old_data": where, "replayed": rehearsed, "new_train": len(new.train),
              "classes_added": [c for c in merged.classes if c not in run.classes],
              "new": _before_after(run, updated, new, merged.classes)}
    if unused:
        report["reference_unused"] = f"--strategy {cfg.strategy} trains the body; linear-probe would replay the reference"
    if reference is not None:
        report["replayed_features"] = {"rows": len(replayed[1]), "from": f"the run's reference ({reference['split']})",
                                       "strategy": cfg.strategy, "balance": cfg.balance}
    if old is not None:
        report["old"] = _before_after(run, updated, old, merged.classes)
        if reference is not None:  # the reference holds the run's own test (else val) rows, which score it here
            report["old"]["seen"] = "its rows' features were replayed from the reference: not an unseen measure"
    write_json(updated.path / "metrics.json", updated.metrics | {"update": report})
    render_report(updated.path)
    print(summary(report, updated.model.task.name), flush=True)
    return updated


def summary(report: dict, task: str) -> str:
    score = "R²" if task == "regression" else "accuracy"
    features = report.get("replayed_features")
    lines = [f"  update    of {report['from']}, from {report['new_train']} new training rows"
             + (f" and {report['replayed']} old ones replayed" if report["replayed"] else
                f" and the features of {features['rows']} held-out old rows (the run's reference; body kept, "
                f"{features['strategy']})" if features else " (no old rows replayed)")
             + (f"; classes added: {', '.join(report['classes_added'])}" if report["classes_added"] else "")]
    for key in ("old", "new"):
        r = report.get(key)
        if r and r["n"]:
            change = r["after"] - r["before"]
            verdict = f"forgot {-change:.4f}" if key == "old" and change < 0 else f"{change:+.4f}"
            lines.append(f"            {key} {r['split']} (n={r['n']}): {score} {r['before']:.4f} before -> "
                         f"{r['after']:.4f} after ({verdict})" + (" (seen: its features were replayed)" if "seen" in r else ""))
    if "old" not in report:
        lines.append(f"            old data: forgetting not measured ({report['old_data']})")
    if not report["replayed"] and not features and report["classes_added"]:
        lines.append("            warning: new classes and no old rows rehearsed: the head learns only the classes it is "
                     "shown, so the old ones are forgotten (benchmarks/lifecycle.py: 0.000 on them); give the old data"
                     + (", or leave --strategy out: the run's reference is then replayed, its body kept"
                        if "reference_unused" in report else ""))
    return "\n".join(lines)


def _replayable_reference(run: Run) -> dict | None:
    """The run's reference, where it holds labels (runs saved since 2026-12-06) of the run's task."""
    reference = load_reference(run.path / "model")
    if reference is None or "labels" not in reference or not len(reference["labels"]):
        return None
    return reference


def _old_data(old_cfg: FitConfig, given) -> tuple[LabeledData | None, str]:
    """The run's own data, split as it was split (same options, same seed), or None with the reason."""
    source = Path(given or old_cfg.data)
    if not source.exists():
        if given:
            raise UserError(f"--old-data {given} does not exist")
        return None, (f"the run's data, {old_cfg.data}, is not there any more: no rehearsal and no forgetting "
                      "measured (give --old-data)")
    cfg = dataclasses.replace(old_cfg, data=str(source), resolved={})
    return resolve_modality(cfg).load(cfg), str(source)


def _merged(new: LabeledData, old: LabeledData | None, replay: int | None, seed: int, run: Run) -> LabeledData:
    """New rows, the replayed old training rows and every old validation (unless the run learned them) and test row,
    in one label space: the run's classes first (in its order, so its head's rows keep their meaning), then the new."""
    task = run.model.task.name
    if task not in ("classification", "regression"):
        raise UserError(f"update handles classification and regression runs; this one is {task}: fit the new data with "
                        f"--model run:{run.path} instead")
    if new.task != task or (old is not None and old.task != task):
        raise UserError(f"the new data reads as {new.task}, the run is {task}: give the same kind of labels (or --task {task})")
    classes = list(run.classes) + [c for c in new.classes if c not in run.classes] if task == "classification" else new.classes
    train, val, test = _relabeled(new.train, new, classes), _relabeled(new.val, new, classes), _relabeled(new.test, new, classes)
    if old is not None:
        kept = old.train
        if replay is not None and replay < len(kept):
            kept = [kept[i] for i in np.sort(np.random.default_rng(seed).choice(len(kept), max(0, replay), replace=False))]
        train += _relabeled(kept, old, classes)
        if "refit" not in run.metrics:  # a run refit on train + val learned those rows: there its head would win
            val += _relabeled(old.val, old, classes)
        test += _relabeled(old.test, old, classes)
    layout = f"update: {new.layout}" + (f" + replayed {old.layout}" if old is not None else "")
    return LabeledData(new.modality, task, classes, train, val, test, layout, new.skipped, new.info)


def _relabeled(items: list, data: LabeledData, classes: list[str]) -> list:
    if data.task != "classification":
        return list(items)
    index = {c: i for i, c in enumerate(classes)}
    return [(x, index[data.classes[y]]) for x, y in items]


def _before_after(before: Run, after: Run, data: LabeledData, classes: list[str]) -> dict:
    """The held-out rows of one data set (test, else val) scored by the run and by its update (accuracy, or R²)."""
    split = "test" if data.test else "val"
    items = _relabeled(getattr(data, split), data, classes)
    if not items:
        return {"n": 0, "split": split}
    task = after.model.task
    xs, ys = [x for x, _ in items], [y for _, y in items]
    scores = []
    for run in (before, after):
        preds = predict_outputs(run.model, xs, device=_device())
        if task.name == "classification" and preds.shape[1] < len(classes):  # the old model cannot name a new class
            preds = np.pad(preds, ((0, 0), (0, len(classes) - preds.shape[1])))
        m = task.metrics(ys, preds, classes)
        scores.append(float(m["r2"] if task.name == "regression" else m["accuracy"]))
    return {"n": len(items), "split": split, "before": scores[0], "after": scores[1]}
