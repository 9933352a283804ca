"""Predictions on new files: top-k classes with probabilities, as JSON or CSV."""
from __future__ import annotations

import csv
import io
import json

import numpy as np


def top_k_rows(paths: list[str], probs: np.ndarray, classes: list[str], k: int) -> list[dict]:
    k = max(1, min(k, len(classes)))
    order = np.argsort(-probs, axis=1)[:, :k]
    return [
        {"path": path, "predictions": [{"label": classes[j], "probability": round(float(p[j]), 6)} for j in idx]}
        for path, p, idx in zip(paths, probs, order)
    ]


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    buf = io.StringIO()
    k = max(len(r["predictions"]) for r in rows) if rows else 1
    writer = csv.writer(buf)
    writer.writerow(["path"] + [f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "probability")])
    for r in rows:
        writer.writerow([r["path"]] + [v for p in r["predictions"] for v in (p["label"], p["probability"])])
    return buf.getvalue()
