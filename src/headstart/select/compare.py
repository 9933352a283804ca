"""compare: did transfer help? The transferred model vs the same architecture from scratch vs a classical baseline.

Same data, same splits, same fine-tuning budget (epochs). Learning curves over epochs (validation score per
epoch) and over training-set fractions (test score), and for each contender the three numbers the transfer
literature uses: start (score after the first epoch), slope (mean gain per epoch over the first epochs) and
asymptote (best score). When scratch or the baseline is at least as good as transfer on the full data, the
result says "negative transfer" plainly, with what to try next.
"""
from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

from headstart.backbones import create_backbone
from headstart.backbones.base import reinitialize
from headstart.config import FitConfig
from headstart.data import resolve_modality
from headstart.data.base import check_classes, one_target
from headstart.data.splits import stratified_split
from headstart.errors import UserError
from headstart.io_utils import write_json, write_text
from headstart.rundir import default_out, prepare_run_dir

SLOPE_EPOCHS = 3
# Per task: the test score compared, the validation column of its per-epoch curve, and whether higher is better.
TASK_SCORES = {"classification": ("accuracy", "val_acc", True), "multilabel": ("f1_micro", "val_f1", True),
               "regression": ("r2", "val_mae", False)}


def compare(data: str | Path, model: str = "auto", strategy: str = "auto", fractions=(0.1, 0.25, 0.5, 1.0),
            out: str | Path | None = None, force: bool = False, **options) -> dict:
    """Transfer vs scratch vs classical baseline on `data`; writes compare.json, compare.png and one run per fit."""
    fractions = sorted({float(f) for f in (fractions.split(",") if isinstance(fractions, str) else fractions)})
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise UserError(f"--fractions must be numbers in (0, 1], e.g. 0.1,0.25,0.5,1 (got {fractions})")
    FitConfig.check_options(options, "compare")
    base_cfg = FitConfig(data=str(data), model=model, strategy=strategy, **options)
    modality = resolve_modality(base_cfg)
    full = one_target(check_classes(modality.load(base_cfg), data), "compare")
    if not full.test:
        how = ("add a test/ folder beside train/ and val/, or list the images in a CSV manifest (path,label[,split]) "
               "so headstart can split a test set off" if full.layout == "splits" else "let headstart split one off (--test-fraction > 0)")
        raise UserError(f"{data}: compare scores on a test split, and there is none; {how}")
    model_name = model if model != "auto" else modality.default_backbone
    if not create_backbone(model_name, base_cfg.weights).pretrained:  # e.g. a table's mlp: both arms would be scratch
        raise UserError(f"compare tests transfer from a pre-trained body, and {model_name} starts from random "
                        f"initialisation; reuse the body of an earlier run on related data: --model run:DIR")
    out_dir = prepare_run_dir(out or default_out(f"compare-{Path(str(data)).stem}"), force, keep=[data, model])
    # The budget both models get: as many fine-tuning epochs, no early stopping cutting one curve short.
    budget = {"patience": 10**6}
    regression = full.task == "regression"
    # label sets are read as classes ("a;b") until fitting splits them: the runs are multi-label, and so is the score
    task = "multilabel" if full.task_chosen == "multilabel" else full.task
    started = time.perf_counter()
    results = {"data": str(data), "model": model_name, "strategy": strategy, "task": task,
               "score": TASK_SCORES[task][0], "n_test": len(full.test), "fractions": {}}
    for frac in fractions:
        train = _subset(full.train, frac, base_cfg.seed, regression)
        same = next((f for f, r in results["fractions"].items() if r["train_size"] == len(train)), None)
        if same is not None:  # a fraction too small to differ from the one before: the same rows, fitted once
            print(f"compare: fraction {frac:g} draws as many training rows ({len(train)}) as fraction {same}: not "
                  "fitted again", flush=True)
            continue
        part = dataclasses.replace(full, train=train)  # every other field as read, task_chosen too
        row, chosen = {"train_size": len(train)}, {}
        for arm, arm_strategy, body in (("transfer", strategy, None), ("scratch", "finetune", "scratch")):
            from headstart.fitting import fit_config

            cfg = FitConfig(data=str(data), model=model_name, strategy=arm_strategy,
                            out=str(out_dir / f"train-{frac:g}" / arm), force=True,
                            **{**options, **budget, "refit": "never", **chosen})  # every arm learns from the same rows
            backbone = reinitialize(create_backbone(model_name, cfg.weights), cfg.seed) if body == "scratch" else None
            run = fit_config(cfg, data=part, backbone=backbone)
            row[arm] = _arm_summary(run, task)
            chosen = _augmentation_of(run, options)  # scratch trains on the views transfer's check kept
        # multi-label: the baseline would score whole label sets as classes, not comparable with micro F1
        baseline = modality.classical_baseline(train, full.test, task) if task != "multilabel" else None
        if baseline:
            row["baseline"] = {"name": baseline[0], "test": baseline[1]}
        results["fractions"][f"{frac:g}"] = row
    last = list(results["fractions"])[-1]  # the largest fraction fitted
    results["verdict"] = _verdict(results["fractions"][last], model_name, strategy,
                                  n_test=len(full.test) if task == "classification" else None, modality=modality.name)
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_json(out_dir / "compare.json", results)
    from headstart.plots import plot_compare

    plot_compare(results, out_dir / "compare.png")
    write_text(out_dir / "compare.md", format_compare(results) + "\n")
    _into_transfer_report(out_dir / f"train-{last}" / "transfer", out_dir, results)
    print("\n" + format_compare(results) + f"\nsaved to {out_dir}/compare.json, compare.png", flush=True)
    return results


def _augmentation_of(run, options: dict) -> dict:
    """The crops and flips a run's augmentation check chose, as options (those the user gave stay theirs): the
    scratch arm trains on the same views, and its random features, which cannot judge a view, are not asked."""
    import yaml

    chosen = (yaml.safe_load((run.path / "config.yaml").read_text()) or {}).get("resolved", {}).get("augmentation")
    if not chosen:
        return {}
    picked = {"flip": "on" if chosen["flip"] else "off", "crop_scale": chosen["min_scale"]}
    return {k: v for k, v in picked.items() if options.get(k) in (None, "auto")}


def _subset(items: list, fraction: float, seed: int, regression: bool) -> list:
    if fraction >= 1:
        return list(items)
    if regression:
        rows = list(items)
        random.Random(seed).shuffle(rows)
        return rows[: max(2, int(round(fraction * len(rows))))]
    _, kept = stratified_split(items, [y for _, y in items], fraction, seed)
    return kept


def _arm_summary(run, task: str) -> dict:
    """Per-epoch validation curve and start / slope / asymptote from a run's history."""
    score, key, higher_is_better = TASK_SCORES[task]
    curve = [row[key] for row in run.history if row.get(key) is not None and row["epoch"] > 0]
    summary = {"test": run.metrics[score], "curve": curve, "seconds": run.metrics.get("seconds")}
    if curve:
        k = min(SLOPE_EPOCHS, len(curve) - 1)
        summary.update(start=curve[0], slope=(curve[k] - curve[0]) / k if k else 0.0,
                       asymptote=(max if higher_is_better else min)(curve))
    return summary


def chance_margin(scores: list[float], n: int) -> float:
    """Two standard errors of the difference of two accuracies on `n` test examples (binomial, at their mean): a gap
    below it is within what another draw of as many test examples could turn around."""
    p = sum(scores) / len(scores)
    return 2 * (2 * p * (1 - p) / n) ** 0.5 if n else float("inf")


def _within_chance(transfer: float, rivals: dict, n_test: int | None) -> str:
    """A sentence for a verdict drawn from a gap too small for the test split, else ""."""
    if not n_test:
        return ""
    gaps = [abs(score - transfer) for score in rivals.values() if score != transfer]
    margin = chance_margin([transfer, *rivals.values()], n_test)
    if not gaps or min(gaps) >= margin:
        return ""
    return (f" On {n_test} test examples a gap under {margin:.2f} is within chance (two standard errors): "
            "the order may turn on another draw; more test data would settle it.")


INPUT_SIZE_OPTION = {"image": "--image-size", "text": "--max-length", "audio": "--clip-seconds"}


def _verdict(full_row: dict, model: str, strategy: str = "two-stage", n_test: int | None = None,
             modality: str = "image") -> dict:
    """Transfer against scratch and the baseline on the full data; `n_test` (accuracy only) adds whether the closest
    gap is within chance on that many test examples (1 of 6 images called "helped" plainly)."""
    transfer = full_row["transfer"]["test"]
    rivals = {"scratch": full_row["scratch"]["test"]}
    if "baseline" in full_row:
        rivals[full_row["baseline"]["name"]] = full_row["baseline"]["test"]
    beaten_by = [name for name, score in rivals.items() if score > transfer]
    tied = [name for name, score in rivals.items() if score == transfer]
    caution = _within_chance(transfer, rivals, n_test)
    verdict = _verdict_of(transfer, rivals, beaten_by, tied, model, strategy, modality)
    if caution:
        verdict.update(within_chance=True, message=verdict["message"].rstrip(".") + "." + caution)
    return verdict


def _verdict_of(transfer: float, rivals: dict, beaten_by: list, tied: list, model: str, strategy: str,
                modality: str) -> dict:
    if not beaten_by and not tied:
        return {"negative_transfer": False, "message": f"transfer from {model} helped: {transfer:.4f} vs "
                + ", ".join(f"{n} {s:.4f}" for n, s in rivals.items())}
    tries = ["another body (`headstart rank DATA --models ...`)"]
    if strategy == "linear-probe":
        tries.append("fine-tuning all layers instead of a probe (--strategy two-stage or finetune)")
    if modality in INPUT_SIZE_OPTION:  # a table's rows have no size to raise
        tries.append(f"a larger input ({INPUT_SIZE_OPTION[modality]})")
    tries.append("more labeled data")
    try_these = f"Try {', '.join(tries[:-1])} or {tries[-1]}."
    if not beaten_by:  # level is no harm done, and no help either: said apart from negative transfer
        return {"negative_transfer": False, "no_gain": True,
                "message": f"NO GAIN FROM TRANSFER: {', '.join(tied)} did as well as transfer from {model} "
                           f"({transfer:.4f}). {try_these}"}
    return {
        "negative_transfer": True,
        "message": f"NEGATIVE TRANSFER: {', '.join(beaten_by)} did better than transfer from {model} ({transfer:.4f}). "
                   + try_these,
    }


CURVE_NAMES = {"r2": "val MAE, lower is better", "accuracy": "val accuracy", "f1_micro": "val micro F1"}


def format_compare(results: dict) -> str:
    score = results["score"]
    curve = CURVE_NAMES.get(score, "val accuracy")  # the curves are validation's, per epoch
    lines = [f"transfer ({results['model']}, {results['strategy']}) vs scratch (same architecture, random init) vs classical baseline; "
             f"test {score}; start / slope / asymptote of the {curve} curve",
             f"| train fraction | n | transfer (test {score}) | scratch (test {score}) | baseline (test {score}) "
             "| transfer start / slope / asymptote | scratch start / slope / asymptote |",
             "|---|---|---|---|---|---|---|"]
    for frac, row in results["fractions"].items():
        def sss(arm):
            a = row[arm]
            return f"{a['start']:.3f} / {a['slope']:+.3f} / {a['asymptote']:.3f}" if "start" in a else "-"

        base = f"{row['baseline']['test']:.4f}" if "baseline" in row else "-"
        lines.append(f"| {frac} | {row['train_size']} | {row['transfer']['test']:.4f} | {row['scratch']['test']:.4f} | {base} | "
                     f"{sss('transfer')} | {sss('scratch')} |")
    lines.append(results["verdict"]["message"])
    return "\n".join(lines)


def _into_transfer_report(run_dir: Path, out_dir: Path, results: dict) -> None:
    """The full-data transfer run's report.html shows the comparison too."""
    import shutil

    from headstart.report import render_report

    write_json(run_dir / "compare.json", results)
    shutil.copyfile(out_dir / "compare.png", run_dir / "compare.png")
    render_report(run_dir)
