"""After the fit, on real photos: update without forgetting, monitor for drift, serve over HTTP.

    python benchmarks/lifecycle.py                      # tf_flowers + hymenoptera from ../shared/data, ~5 min on 2 cores
    python benchmarks/lifecycle.py --image-size 96 --epochs 2 --seeds 0

A run learns three tf_flowers classes (daisy, dandelion, roses: 80 training photos each); then two new ones arrive
(sunflowers, tulips: 80 each). Every arm starts from that run and is scored on tf_flowers' own val photos of the old
classes, of the new ones, and of all five:

  update        `headstart update RUN NEW`: the old training photos rehearsed, L2-SP towards the run (the default)
  update-noold  --replay 0, as when the old data is gone: the run's reference (the features and labels of its held-out
                photos) is replayed to the head, the body kept (linear-probe, update's default then)
  update-noreplay  --replay 0 --strategy l2-sp: nothing replayed, L2-SP alone guards the old classes
  fit-run       `headstart fit NEW --model run:RUN` (l2-sp too): what reusing a run gives without update - a model of
                the two new classes only, which cannot name an old one (catastrophic forgetting, by construction)
  joint         one fit on all five classes from the bundled weights: what rehearsal of every old photo approaches

Then `monitor` compares inputs with the old run's reference (its held-out photos): the old classes' val photos
(the same domain), daisy's alone (label shift), those photos in grey and blurred (covariate shift), and hymenoptera's
ants and bees (another domain). Last, `serve`'s app (in process, FastAPI's TestClient) against Run.predict on the
same photos: milliseconds per request of 1 and 16 photos. Prints markdown tables.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageFilter

import headstart as hs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line, markdown_table, mean_std  # noqa: E402

OLD, NEW = ("daisy", "dandelion", "roses"), ("sunflowers", "tulips")


def link_classes(source: Path, classes, folder: Path) -> Path:
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((source / c).iterdir()):
            (folder / c / f.name).symlink_to(f.resolve())
    return folder


def grey_and_blurred(source: Path, folder: Path) -> Path:
    for f in sorted(source.rglob("*.jpg")):
        out = folder / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("L").convert("RGB").filter(ImageFilter.GaussianBlur(3)).save(out, quality=90)
    return folder


def accuracy(run, data: Path) -> float:
    return run.evaluate(str(data), save=False)["accuracy"]


def update_arms(root: Path, flowers: Path, options: dict, seed: int) -> dict:
    old_train, new_train = link_classes(flowers / "train", OLD, root / "old"), link_classes(flowers / "train", NEW, root / "new")
    tests = {"old classes": link_classes(flowers / "val", OLD, root / "val-old"),
             "new classes": link_classes(flowers / "val", NEW, root / "val-new"),
             "all five": link_classes(flowers / "val", OLD + NEW, root / "val-all")}
    opts = {**options, "seed": seed, "progress": False}
    started = time.perf_counter()
    run = hs.fit(str(old_train), out=str(root / "run"), **opts)
    results = {"run": ({k: (accuracy(run, v) if k == "old classes" else float("nan")) for k, v in tests.items()},
                       time.perf_counter() - started)}
    arms = {
        "update": lambda: hs.update(run, str(new_train), out=str(root / "update"), **opts),
        "update-noold": lambda: hs.update(run, str(new_train), out=str(root / "noold"), replay=0, **opts),
        "update-noreplay": lambda: hs.update(run, str(new_train), out=str(root / "noreplay"), replay=0, strategy="l2-sp",
                                             **opts),
        "fit-run": lambda: hs.fit(str(new_train), model=f"run:{run.path}", strategy="l2-sp", out=str(root / "fit-run"), **opts),
        "joint": lambda: hs.fit(str(link_classes(flowers / "train", OLD + NEW, root / "all")), out=str(root / "joint"), **opts),
    }
    for name, make in arms.items():
        started = time.perf_counter()
        model = make()
        seconds = time.perf_counter() - started
        results[name] = ({k: _scored(model, v) for k, v in tests.items()}, seconds)
    return results, run


def _scored(run, data: Path) -> float:
    """Accuracy over the photos of `data`; a class the model does not know counts as wrong (fit-run's old ones)."""
    import numpy as np

    known = [c for c in sorted(p.name for p in data.iterdir()) if c in run.classes]
    total = sum(len(list((data / c).iterdir())) for c in sorted(p.name for p in data.iterdir()))
    right = 0
    for c in known:
        files = sorted(str(f) for f in (data / c).iterdir())
        right += int((np.asarray(run.predict_outputs(files)).argmax(1) == run.classes.index(c)).sum())
    return right / total


def monitor_rows(run, root: Path, flowers: Path) -> list[list]:
    checks = {"old classes' val photos (same domain)": root / "val-old",
              "daisy's val photos alone (label shift)": root / "val-old" / "daisy",
              "the same photos grey and blurred (covariate shift)": grey_and_blurred(root / "val-old", root / "grey"),
              "hymenoptera val, ants and bees (other domain)": SHARED / "hymenoptera" / "val"}
    rows = []
    for what, inputs in checks.items():
        started = time.perf_counter()
        r = run.monitor(str(inputs), save=False, progress=False)
        tests = ", ".join(f"{k} {v['p']:.2g}" for k, v in r["tests"].items())
        rows.append([what, r["new_rows"], "**drift**" if r["drift"] else "no drift", f"{r['p']:.2g}", tests,
                     f"{r['novel_rows']} ({r['novel_rows'] / r['new_rows']:.0%})", f"{time.perf_counter() - started:.1f}"])
    return rows


def serve_rows(run, root: Path) -> list[list]:
    from fastapi.testclient import TestClient

    from headstart.deploy.serve import create_app

    client = TestClient(create_app(run))
    photos = sorted((root / "val-old").rglob("*.jpg"))[:16]
    rows = []
    for n in (1, 16):
        batch = photos[:n]
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in batch]
        client.post("/predict/files", files=files)  # warm
        run.predict([str(p) for p in batch])
        t0 = time.perf_counter()
        for _ in range(5):
            assert client.post("/predict/files", files=files).status_code == 200
        served = (time.perf_counter() - t0) / 5
        t0 = time.perf_counter()
        for _ in range(5):
            run.predict([str(p) for p in batch])
        direct = (time.perf_counter() - t0) / 5
        rows.append([n, f"{1000 * served:.0f}", f"{1000 * direct:.0f}", f"{served / direct:.2f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    flowers = SHARED / "tf_flowers"
    if not flowers.is_dir():
        sys.exit(f"{flowers} is absent: this benchmark reads ../shared/data")
    options = {"image_size": args.image_size, "epochs": args.epochs}
    print(machine_line())
    print(f"command: python benchmarks/lifecycle.py --image-size {args.image_size} --epochs {args.epochs} --seeds {args.seeds}\n")
    per_arm: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in map(int, args.seeds.split(",")):
            root = Path(tmp) / f"seed{seed}"
            results, run = update_arms(root, flowers, options, seed)
            for arm, (scores, seconds) in results.items():
                per_arm.setdefault(arm, []).append((scores, seconds))
        keys = ["old classes", "new classes", "all five"]
        rows = []
        for arm, draws in per_arm.items():
            cells = []
            for k in keys:
                m, s = mean_std([d[0][k] for d in draws])
                cells.append("-" if m != m else f"{m:.3f} ± {s:.3f}")
            rows.append([arm] + cells + [f"{mean_std([d[1] for d in draws])[0]:.0f}"])
        print(markdown_table(["arm", "old classes", "new classes", "all five", "seconds"], rows))
        print()
        print(markdown_table(["monitor inputs (against the run of the last seed)", "rows", "verdict", "p", "tests (p)",
                              "unlike the reference", "seconds"], monitor_rows(run, root, flowers)))
        print()
        print(markdown_table(["photos per request", "serve ms", "Run.predict ms", "serve / predict"], serve_rows(run, root)))


if __name__ == "__main__":
    main()
