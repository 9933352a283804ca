"""Text benchmark: TF-IDF + logistic regression vs headstart linear-probe and two-stage on the text sets in ../shared/data.

    python benchmarks/text.py                                   # sst2, ag_news, banking77; all rows, default settings
    python benchmarks/text.py --sets sst2 --max-train 2000      # a stratified 2,000-row subsample of train (CPU budget)
    python benchmarks/text.py --sets sst2 --max-train 2000 --extra "two-stage:lr=5e-5,lr_mult=2,epochs=3,label_smoothing=0"

Every method sees the same training rows (headstart splits its validation set off them) and is scored on the
set's test file (validation.csv for SST-2, whose GLUE test set has no labels), never used while fitting. Each
fit gets a fresh feature cache, so its time includes feature extraction. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split

import headstart as hs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line, read_rows, write_rows  # noqa: E402 - the benchmarks' shared scaffolding

TEXT_SETS = ["sst2", "ag_news", "banking77"]


def subsample(rows: list, n: int, seed: int = 0) -> list:
    """A stratified subsample of `n` rows (all rows when n is 0 or at least their number)."""
    if not n or n >= len(rows):
        return rows
    kept, _ = train_test_split(rows, train_size=n, random_state=seed, stratify=[y for _, y in rows])
    return kept


def tfidf_baseline(train: list, test: list) -> dict:
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x = vectorizer.fit_transform([t for t, _ in train])
    # lbfgs: scikit-learn 1.9 dropped liblinear for more than two classes (banking77, ag_news)
    search = GridSearchCV(LogisticRegression(max_iter=2000), {"C": [1.0, 3.0, 10.0, 30.0]}, cv=3).fit(x, [y for _, y in train])
    pred = search.predict(vectorizer.transform([t for t, _ in test]))
    acc = sum(p == y for p, (_, y) in zip(pred, test)) / len(test)
    return {"accuracy": acc, "wall_s": time.perf_counter() - start, "note": f"C={search.best_params_['C']}"}


def fit_and_score(folder: Path, strategy: str, out: Path, **options) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        run = hs.fit(str(folder), strategy=strategy, out=str(out), force=True, cache_dir=cache, progress=False, **options)
        wall = time.perf_counter() - start
    stages = run.metrics["stages"]
    feats = stages.get("features", {"inputs": 0, "seconds": 0})
    return {
        "accuracy": run.metrics["accuracy"],
        "max_length": hs.load(out).model.preprocess.max_length,
        "features_s": feats["seconds"],
        "texts_s": feats["inputs"] / feats["seconds"] if feats["seconds"] else float("nan"),
        "head_s": stages.get("head", {}).get("seconds", 0.0),
        "finetune_s": stages.get("finetune", {}).get("seconds", 0.0),
        "best_epochs": {k: f"{v['best_epoch']}/{v['epochs_run']}" for k, v in stages.items() if "best_epoch" in v},
        "wall_s": wall,
        "note": "",
    }


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_extra(spec: str) -> tuple[str, dict]:
    """'two-stage:lr=5e-5,epochs=3' -> ("two-stage", {"lr": 5e-05, "epochs": 3})."""
    strategy, _, options = spec.partition(":")
    return strategy, {k: _value(v) for k, v in (item.split("=", 1) for item in options.split(",") if item)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(TEXT_SETS))
    parser.add_argument("--strategies", default="linear-probe,two-stage", help="headstart strategies at default settings")
    parser.add_argument("--extra", action="append", default=[], help="another row: STRATEGY:key=value,... (fit options)")
    parser.add_argument("--max-train", type=int, default=0, help="stratified subsample of train rows (0: all)")
    parser.add_argument("--max-test", type=int, default=0, help="stratified subsample of the scored rows (0: all)")
    parser.add_argument("--no-baseline", action="store_true", help="skip TF-IDF + logistic regression")
    parser.add_argument("--out", default="runs/bench-text")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"benchmark data not found at {SHARED}")

    rows = []
    for name in args.sets.split(","):
        root = SHARED / name
        test_file = root / "test.csv" if (root / "test.csv").is_file() else root / "validation.csv"
        train, test = subsample(read_rows(root / "train.csv"), args.max_train), subsample(read_rows(test_file), args.max_test)
        scored = f"{test_file.stem} ({len(test)})"
        base = {"set": name, "train": len(train), "scored_on": scored}
        if not args.no_baseline:
            result = tfidf_baseline(train, test)
            rows.append({**base, "method": "TF-IDF + logistic regression", **result})
            print(f"{name:10} {'tfidf':28} acc {result['accuracy']:.4f}  wall {result['wall_s']:.0f}s", flush=True)
        runs = [(s, {}) for s in args.strategies.split(",") if s] + [parse_extra(e) for e in args.extra]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_rows(folder / "train.csv", train)
            write_rows(folder / "test.csv", test)
            for strategy, options in runs:
                tag = f"headstart {strategy}" + (f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")
                out = Path(args.out) / (f"{name}-{strategy}" + "".join(f"-{k}{v}" for k, v in options.items()))
                result = fit_and_score(folder, strategy, out, **options)
                rows.append({**base, "method": tag, **result})
                print(f"{name:10} {tag:28} acc {result['accuracy']:.4f}  wall {result['wall_s']:.0f}s", flush=True)

    print(f"\n{machine_line()}")
    print("\n| set | method | train rows | scored on | accuracy | max tokens | features s | features texts/s | head s | fine-tune s | best epochs | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "features_s" not in r:
            print(f"| {r['set']} | {r['method']} ({r['note']}) | {r['train']} | {r['scored_on']} | {r['accuracy']:.4f} | | | | | | | {r['wall_s']:.0f} |")
            continue
        print(f"| {r['set']} | {r['method']} | {r['train']} | {r['scored_on']} | {r['accuracy']:.4f} | {r['max_length']} | {r['features_s']:.1f} | "
              f"{r['texts_s']:.0f} | {r['head_s']:.1f} | {r['finetune_s']:.1f} | {r['best_epochs']} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
