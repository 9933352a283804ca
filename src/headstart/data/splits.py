"""Stratified train/val/test splits (scikit-learn), and random ones for numeric targets, reproducible from a seed."""
from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.model_selection import train_test_split


def stratified_split(items: list, labels: list[int], fraction: float, seed: int) -> tuple[list, list]:
    """Split off `fraction` of the items, keeping class proportions; (kept, split_off). A class of three or more items
    has one held out even where proportions round it away (4 images of a class beside 60 of another)."""
    if fraction <= 0 or len(items) == 0:
        return list(items), []
    counts = Counter(labels)
    n_off = max(1, int(round(fraction * len(items))))
    if len(counts) <= len(items) // 2:  # room for one of each class on both sides: a few-shot split keeps every class
        n_off = max(n_off, len(counts))
    stratify = labels if min(counts.values()) >= 2 and len(counts) <= n_off <= len(items) - len(counts) else None
    kept, off = train_test_split(list(range(len(items))), test_size=n_off, random_state=seed, stratify=stratify)
    kept, off = _hold_out_every_class(kept, off, labels, counts)
    return [items[i] for i in kept], [items[i] for i in off]


def _hold_out_every_class(kept: list[int], off: list[int], labels: list[int], counts: Counter) -> tuple[list[int], list[int]]:
    """For each class of 3+ items that `off` lacks, swap one of its kept items for a held-out item of the class `off`
    holds most of (while that class keeps one there): the held-out part keeps its size, and a balanced split, where
    no class is missing, is scikit-learn's unchanged."""
    held = Counter(labels[i] for i in off)
    for c in sorted(counts):
        donor = max(held, key=lambda d: (held[d], -d), default=None)
        if counts[c] < 3 or held[c] or donor is None or held[donor] < 2:
            continue
        give, back = next(i for i in kept if labels[i] == c), next(i for i in off if labels[i] == donor)
        kept = [i for i in kept if i != give] + [back]
        off = [i for i in off if i != back] + [give]
        held[c], held[donor] = 1, held[donor] - 1
    return kept, off


def random_split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Split off `fraction` of the items at random (targets without classes to stratify by); (kept, split_off)."""
    if fraction <= 0 or len(items) < 2:
        return list(items), []
    n_off = min(max(1, int(round(fraction * len(items)))), len(items) - 1)
    order = np.random.default_rng(seed).permutation(len(items))
    off = set(order[:n_off].tolist())
    return [x for i, x in enumerate(items) if i not in off], [x for i, x in enumerate(items) if i in off]


def split_targets(items: list, fraction: float, seed: int, specs: list[dict]) -> tuple[list, list]:
    """Split off `fraction` of multi-target items (a target per column, `specs` saying each column's task): stratified
    by the first classified column, at random where every column is a number."""
    kinds = [spec["task"] for spec in specs]
    if "classification" not in kinds:
        return random_split(items, fraction, seed)
    column = kinds.index("classification")
    return stratified_split(items, [y[column] for _, y in items], fraction, seed)
