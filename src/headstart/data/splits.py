"""Stratified train/val/test splits (scikit-learn), reproducible from a seed."""
from __future__ import annotations

from sklearn.model_selection import train_test_split


def stratified_split(items: list, labels: list[int], fraction: float, seed: int) -> tuple[list, list]:
    """Split off `fraction` of the items, keeping class proportions; (kept, split_off)."""
    if fraction <= 0 or len(items) == 0:
        return list(items), []
    counts = {c: labels.count(c) for c in set(labels)}
    n_off = max(1, int(round(fraction * len(items))))
    if len(counts) <= len(items) // 2:  # room for one of each class on both sides: a few-shot split keeps every class
        n_off = max(n_off, len(counts))
    stratify = labels if min(counts.values()) >= 2 and len(counts) <= n_off <= len(items) - len(counts) else None
    kept, off = train_test_split(items, test_size=n_off, random_state=seed, stratify=stratify)
    return list(kept), list(off)
