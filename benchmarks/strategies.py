"""Strategy benchmark: every registered strategy on the image and text sets in ../shared/data.

    python benchmarks/strategies.py                                          # every set, all ten strategies
    python benchmarks/strategies.py --sets hymenoptera,tf_flowers --image-size 128 --epochs 3
    python benchmarks/strategies.py --sets sst2 --max-train 1000 --epochs 1 --strategies linear-probe,lora,auto
    python benchmarks/strategies.py --sets hymenoptera --strategies lp-ft --extra "lp-ft:bn=all-frozen"
    python benchmarks/strategies.py --quick                                  # a smoke run: tiny subsets, 1 epoch

Protocol, the same for every strategy and set: the training rows/images (a stratified subsample with
--max-train) are all the fit sees, its validation split (early stopping, "head kept" decisions, auto's signals)
is split off them; the score is accuracy on the set's test split (test/ or test.csv; val/ or validation.csv
where there is none), never seen while fitting. Each fit gets a fresh feature cache, so its wall time includes
feature extraction (and, for auto, its signals).

Columns: trainable params are those of the strategy's main stage (the one that trained the most: the head for
linear-probe, the body's stage otherwise; LoRA's before its adapters are merged), as the run records
them in metrics.json "stages"; best epoch is that stage's (0: no epoch beat the solved head, which was kept).
For auto, what it picked and why (its stage note). Every finished row is appended to --rows (JSON lines), so
an interrupted run keeps what it measured; `--table ROWS` prints the markdown table of such a file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import headstart as hs
from headstart.strategies import STRATEGIES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import IMAGE_SETS  # noqa: E402 - the sibling benchmarks' helpers
from text import TEXT_SETS, parse_extra, read_rows, subsample, write_rows  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALL_STRATEGIES = ["linear-probe", "finetune", "two-stage", "lp-ft", "ulmfit", "bitfit", "l2-sp", "lora", "setfit", "auto"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_items(folder: Path) -> list[tuple[Path, str]]:
    return [(p, d.name) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")
            for p in sorted(d.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def image_folder(root: Path, dest: Path, max_train: int, max_test: int, seed: int = 0) -> tuple[int, str]:
    """dest/train/<class>/ (links to a stratified subsample of root's train/) and dest/test/ (root's test/, else val/)."""
    scored = root / "test" if (root / "test").is_dir() else root / "val"
    for split, source, n in (("train", root / "train", max_train), ("test", scored, max_test)):
        items = subsample(image_items(source), n, seed)
        for path, label in items:
            (dest / split / label).mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), dest / split / label / path.name)
        if split == "train":
            n_train = len(items)
        else:
            n_scored = len(items)
    return n_train, f"{scored.name}/ ({n_scored})"


def text_folder(root: Path, dest: Path, max_train: int, max_test: int, seed: int = 0) -> tuple[int, str]:
    """dest/train.csv (a stratified subsample of root's train.csv) and dest/test.csv (test.csv, else validation.csv)."""
    scored = root / "test.csv" if (root / "test.csv").is_file() else root / "validation.csv"
    train, test = subsample(read_rows(root / "train.csv"), max_train, seed), subsample(read_rows(scored), max_test, seed)
    write_rows(dest / "train.csv", train)
    write_rows(dest / "test.csv", test)
    return len(train), f"{scored.stem} ({len(test)})"


def main_stage(stages: dict) -> tuple[str, dict]:
    """The stage that trained the most parameters (the body's stage; the head for a probe)."""
    trained = [(name, note) for name, note in stages.items() if "trainable_params" in note]
    return max(trained, key=lambda t: t[1]["trainable_params"]) if trained else ("", {})


def fit_and_score(folder: Path, strategy: str, out: Path, **options) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        run = hs.fit(str(folder), strategy=strategy, out=str(out), force=True, cache_dir=cache, progress=False,
                     test_fraction=0.0, **options)
        wall = time.perf_counter() - start
    stages = run.metrics["stages"]
    name, note = main_stage(stages)
    auto = stages.get("auto", {})
    head = stages.get("head", {})
    return {
        "accuracy": run.metrics["accuracy"],
        "wall_s": round(wall, 1),
        "main_stage": name,
        "trainable_params": note.get("trainable_params"),
        "best_epoch": f"{note['best_epoch']}/{note['epochs_run']}" if name != "head" and "best_epoch" in note else "",
        "head_val_loss": head.get("best_val_loss"),
        "best_val_loss": note.get("best_val_loss"),
        "picked": auto.get("picked", ""),
        "reason": auto.get("reason", ""),
        "input": hs.load(out).model.preprocess.to_dict(),
    }


def _params(n) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else f"{n:,}"


def print_table(rows: list[dict]) -> None:
    print("| set | train | scored on | strategy | accuracy | wall s | trainable params | best epoch | head → best val loss | auto: picked (why) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        losses = (f"{r['head_val_loss']:.3f} → {r['best_val_loss']:.3f}" if r.get("head_val_loss") is not None and r.get("best_val_loss") is not None
                  and r["main_stage"] != "head" else "")
        auto = f"**{r['picked']}** ({r['reason']})" if r.get("picked") else ""
        print(f"| {r['set']} | {r['train']} | {r['scored_on']} | {r['strategy']} | {r['accuracy']:.4f} | {r['wall_s']:.0f} | "
              f"{_params(r['trainable_params'])} | {r['best_epoch']} | {losses} | {auto} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(IMAGE_SETS + TEXT_SETS))
    parser.add_argument("--strategies", default=",".join(ALL_STRATEGIES))
    parser.add_argument("--extra", action="append", default=[], help="another row: STRATEGY:key=value,... (fit options)")
    parser.add_argument("--max-train", type=int, default=0, help="stratified subsample of training rows/images per set (0: all)")
    parser.add_argument("--max-test", type=int, default=0, help="stratified subsample of the scored rows/images (0: all)")
    parser.add_argument("--image-size", type=int, default=None, help="input size for images (default: headstart's choice)")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the backbone's / headstart's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 train rows, 64 scored, 96 px, 1 epoch")
    parser.add_argument("--out", default="runs/bench-strategies")
    parser.add_argument("--rows", default=None, help="append each row to this JSON-lines file (default: OUT/rows.jsonl)")
    parser.add_argument("--table", default=None, help="only print the table of a --rows file")
    args = parser.parse_args()
    if args.table:
        print_table([json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()])
        return
    if args.quick:
        args.max_train, args.max_test = args.max_train or 64, args.max_test or 64
        args.image_size, args.epochs = args.image_size or 96, args.epochs or 1
    if not SHARED.is_dir():
        sys.exit(f"benchmark data not found at {SHARED}")
    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        STRATEGIES.get(s)
    rows_file = Path(args.rows or Path(args.out) / "rows.jsonl")
    rows_file.parent.mkdir(parents=True, exist_ok=True)

    rows = []
    for name in args.sets.split(","):
        root = SHARED / name
        image = name in IMAGE_SETS or (root / "train").is_dir()
        options = {k: v for k, v in {"epochs": args.epochs, "image_size": args.image_size if image else None}.items() if v}
        runs = [(s, {}) for s in strategies] + [parse_extra(e) for e in args.extra]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            n_train, scored = (image_folder if image else text_folder)(root, folder, args.max_train, args.max_test)
            for strategy, extra in runs:
                tag = strategy + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")
                out = Path(args.out) / (f"{name}-{strategy}" + "".join(f"-{k}{v}" for k, v in extra.items()))
                result = fit_and_score(folder, strategy, out, **{**options, **extra})
                row = {"set": name, "train": n_train, "scored_on": scored, "strategy": tag, "options": {**options, **extra}, **result}
                rows.append(row)
                with open(rows_file, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name:14} {tag:28} acc {result['accuracy']:.4f}  wall {result['wall_s']:.0f}s  "
                      f"trainable {_params(result['trainable_params'])}" + (f"  picked {result['picked']}" if result["picked"] else ""),
                      flush=True)

    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}\n")
    print_table(rows)


if __name__ == "__main__":
    main()
