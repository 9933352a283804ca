"""How well does a novelty score tell shifted photos from the run's own domain? AUROC, side by side.

    python benchmarks/novelty.py                 # tf_flowers + hymenoptera from ../shared/data, ~2 min on 2 cores
    python benchmarks/novelty.py --seeds 0

A run learns three tf_flowers classes, as in benchmarks/lifecycle.py (daisy, dandelion, roses; 128 px, 3 epochs).
Its own domain is tf_flowers' val photos of those classes; the shifts are the same photos grey and blurred, and
hymenoptera's ants and bees. Each score ranks every photo, and the AUROC says how often a shifted photo outranks a
same-domain one (0.5: chance):

  kNN        what `monitor` flags on today: the cosine distance to the nearest reference (held-out) photo's features
  MSP        1 - the largest class probability (Hendrycks & Gimpel 2017, the output-side baseline)
  rank mean  the two ranks averaged: a photo far from every reference photo and one the head is unsure of
  robust-z mean  each score centred on the reference rows' median and scaled by their interquartile range, then
             summed: a combination whose threshold the reference's own rows can set (ranks need the test set)

"flagged" is the share `monitor` lists as unlike the reference (kNN over the 0.99 quantile of the reference's own
nearest-neighbour distances). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

import headstart as hs
from headstart.drift import NOVEL_QUANTILE, _nearest_distances, load_reference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line, markdown_table  # noqa: E402
from lifecycle import OLD, grey_and_blurred, link_classes  # noqa: E402


def scores(run, folder: Path, reference: dict) -> tuple[np.ndarray, np.ndarray]:
    """(kNN distance, 1 - max probability) of every photo under `folder`."""
    features, outputs = run._features(run.read_inputs(str(folder))[0], folder.name, False)
    knn = _nearest_distances(reference["features"].float().numpy(), features.float().numpy())[0]
    return knn, 1 - np.asarray(outputs).max(1)


def robust_z(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """x against the reference rows' own scores: (x - their median) / their interquartile range."""
    q1, median, q3 = np.quantile(reference, [0.25, 0.5, 0.75])
    return (x - median) / max(q3 - q1, 1e-12)


def measure(root: Path, seed: int) -> list[list]:
    flowers = SHARED / "tf_flowers"
    same = link_classes(flowers / "val", OLD, root / "same")
    run = hs.fit(str(link_classes(flowers / "train", OLD, root / "old")), out=str(root / "run"), image_size=128,
                 epochs=3, seed=seed, progress=False)
    reference = load_reference(run.path / "model")
    ref_knn = _nearest_distances(reference["features"].float().numpy(), reference["features"][:1].float().numpy())[1]
    threshold = np.quantile(ref_knn, NOVEL_QUANTILE)
    ref_msp = 1 - reference["outputs"].numpy().max(1)
    base_knn, base_msp = scores(run, same, reference)
    rows = []
    for name, folder in (("grey and blurred", grey_and_blurred(same, root / "grey")),
                         ("ants and bees", SHARED / "hymenoptera" / "val")):
        knn, msp = scores(run, folder, reference)
        shifted = np.r_[np.zeros(len(base_knn)), np.ones(len(knn))]
        a, b = np.r_[base_knn, knn], np.r_[base_msp, msp]
        z = robust_z(a, ref_knn) + robust_z(b, ref_msp)
        rows.append([seed, name, f"{roc_auc_score(shifted, a):.3f}", f"{roc_auc_score(shifted, b):.3f}",
                     f"{roc_auc_score(shifted, rankdata(a) + rankdata(b)):.3f}", f"{roc_auc_score(shifted, z):.3f}",
                     f"{np.mean(knn > threshold):.0%} (same domain {np.mean(base_knn > threshold):.0%})"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this benchmark needs tf_flowers and hymenoptera")
    print(machine_line())
    print(f"command: python benchmarks/novelty.py --seeds {args.seeds}\n")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            rows += measure(Path(tmp), seed)
    print(markdown_table(["seed", "shift", "kNN AUROC", "MSP AUROC", "rank mean AUROC", "robust-z mean AUROC",
                          "flagged (kNN, 0.99)"], rows))


if __name__ == "__main__":
    main()
