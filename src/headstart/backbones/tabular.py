"""Tables: a column encoder (the preprocessing) and an MLP body that headstart trains itself.

There is no pre-trained body for someone's table, so `mlp` starts from random initialisation
(`pretrained=False`: the frozen-feature head stage is skipped and fine-tuning uses one rate). Transfer
happens through `--model run:DIR`: the body *and its column encoder* of an earlier tabular run become the
starting point; columns are matched by name, so a reused body demands the columns it was trained on.

Design: each hidden block is Linear -> LayerNorm -> GELU -> Dropout. LayerNorm rather than BatchNorm1d
because it is per row: it behaves the same in training and inference, has no running statistics to
mis-estimate on a 20-row training set or to carry over from a source table whose rows are distributed
differently, never fails on a final batch of one row, and needs none of the `--bn` freezing rules.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from headstart.backbones.base import Backbone
from headstart.backbones.weights import state_digest
from headstart.backbones.registry import ADAPTERS, BACKBONES, BackboneInfo
from headstart.errors import UserError

HIDDEN = (128, 128)
DROPOUT = 0.1
WIDE = True  # the default body is wide and deep (MLPBody); benchmarks/tables.py turns it off to compare
MAX_CATEGORIES = 100  # per column: the most frequent ones; rarer values share the "other/missing" slot
# A categorical column distinct in every one of at least this many training rows is an identifier (a row id, a name),
# left out: its one-hot columns are each seen once (RowId on Carseats' 289 training rows: 101 of 151 features).
# Fewer rows can be all distinct by chance.
IDENTIFIER_MIN_ROWS = 20


def _row_numbers(numbers: list[float], present: int) -> bool:
    """Whether a numeric column counts rows (pandas' written index, an id): a different whole number in each of at
    least IDENTIFIER_MIN_ROWS rows, spanning under twice as many values as rows (a split keeps a share of the ids).
    A measured quantity with all values distinct (prices, incomes) spans far more."""
    if present < IDENTIFIER_MIN_ROWS or len(numbers) != present or len(set(numbers)) != present:
        return False
    return all(float(x).is_integer() for x in numbers) and max(numbers) - min(numbers) + 1 < 2 * present


def _as_number(v) -> float | None:
    from headstart.data.tabular import as_number

    return as_number(v)


def _clip_bounds(col: dict) -> tuple[float, float]:
    """A numeric column's values are read within its training range widened by the range's width each side."""
    lo, hi = col["range"]
    width = max(hi - lo, col["std"])
    return lo - width, hi + width


def gap_words(values: list) -> set[str] | None:
    from headstart.data.tabular import gap_words

    return gap_words(values)


DATE_PARTS = 5  # days (standardised), month as a cycle (sin, cos), weekday as a cycle (sin, cos)


def date_format(values: list) -> str | None:
    """The format (strftime, with a year and a month) that at least NUMERIC_SHARE of a column's present values are
    dates in, guessed from its first distinct values; None when it is not a date column. Kept with the encoder, so
    a row predicted alone is read as the training rows were ("05/01/2020" is one date, whichever row comes first)."""
    import warnings

    from pandas.tseries.api import guess_datetime_format

    from headstart.data.tabular import NUMERIC_SHARE

    texts = [str(v).strip() for v in values]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns when a guess reads the day first
        guesses = {guess_datetime_format(t) for t in dict.fromkeys(texts[:50])}
    formats = sorted(f for f in guesses if f and ("%Y" in f or "%y" in f) and any(m in f for m in ("%m", "%b", "%B")))
    parsed = {f: int(parse_dates(texts, f).notna().sum()) for f in formats}
    best = max(formats, key=lambda f: parsed[f], default=None)
    return best if best and texts and parsed[best] >= NUMERIC_SHARE * len(texts) else None


def parse_dates(values: list, fmt: str):
    """A pandas Series of datetimes in `fmt`, NaT where a value is missing or not such a date."""
    import pandas as pd

    texts = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip() for v in values]
    return pd.to_datetime(pd.Series(texts, dtype=object), format=fmt, errors="coerce")


def date_parts(when) -> tuple[np.ndarray, np.ndarray]:
    """(days since 1970, NaN for gaps; [N, 4] month and weekday as points on their cycles, 0 for gaps)."""
    import pandas as pd

    days = ((when - pd.Timestamp(0)) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64, na_value=np.nan)
    month = 2 * np.pi * (when.dt.month.to_numpy(dtype=np.float64, na_value=np.nan) - 1) / 12
    weekday = 2 * np.pi * when.dt.day_of_week.to_numpy(dtype=np.float64, na_value=np.nan) / 7
    cycles = np.stack([np.sin(month), np.cos(month), np.sin(weekday), np.cos(weekday)], axis=1)
    return days, np.nan_to_num(cycles)


def _category(v) -> str | None:
    """A categorical cell as text (None when missing); 1.0 and 1 are the same category."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class ColumnEncoder:
    """Rows {column: value} -> float32 features, fitted on the training rows and saved as JSON.

    Numeric columns are standardised (missing -> the training mean, i.e. 0, plus a 0/1 "was missing" column
    when the training rows had gaps; a few non-numeric words in a numeric column count as gaps); date columns
    become their standardised day (the trend) and month and weekday as cycles (the seasons), gaps as for numbers;
    other columns are one-hot over the training categories plus one "other/missing" slot. A categorical column with
    a different value in every training row (an identifier) is left out: each of its categories would be seen once,
    and never again. Columns are found by name; extra columns are ignored.
    """

    def __init__(self, columns: list[dict] | None = None, target: str | None = None, ignored: dict | None = None):
        self.columns = columns  # None until fitted
        self.target = target  # the column the model predicts (metadata: not part of the transform's key)
        self.ignored = dict(ignored or {})  # column -> why fit left it out (a record: the transform never reads it)

    @property
    def fitted(self) -> bool:
        return self.columns is not None

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.columns or []]

    @property
    def n_features(self) -> int:
        return sum(self._width(c) for c in self.columns or [])

    @staticmethod
    def _width(col: dict) -> int:
        if col["type"] == "numeric":
            return 1 + int(col["missing_indicator"])
        if col["type"] == "date":
            return DATE_PARTS + int(col["missing_indicator"])
        return len(col["categories"]) + 1

    def fit(self, rows: list[dict], columns: list[str] | None = None, target: str | None = None) -> "ColumnEncoder":
        columns = list(columns) if columns is not None else list(rows[0]) if rows else []
        if not columns:
            raise UserError("the table has no feature columns besides the target")
        fitted, ignored = [], {}
        for name in columns:
            values = [r.get(name) for r in rows]
            present = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
            numbers = [x for x in map(_as_number, present) if x is not None]
            words = gap_words(present)  # a numeric column's few gap words ('?'): data/tabular.py
            counts = Counter(_category(v) for v in present)
            if not present:  # nothing to learn from, and predict should not ask for it
                ignored[name] = "empty in every training row"
            elif len(counts) == 1 and len(present) == len(values) >= IDENTIFIER_MIN_ROWS:  # a few rows can agree by chance
                ignored[name] = f"the same value ({next(iter(counts))}) in every training row"
            elif words is not None and _row_numbers(numbers, len(present)):
                ignored[name] = "a row number (a different whole number in every row, about as many as rows)"
            elif words is not None:
                xs = np.asarray(numbers, dtype=np.float64)
                mean = float(xs.mean()) if len(xs) else 0.0
                std = float(xs.std()) if len(xs) else 0.0
                col = {"name": name, "type": "numeric", "mean": mean, "std": std if std > 1e-12 else 1.0,
                       "missing_indicator": len(numbers) < len(values),
                       **({"range": [float(xs.min()), float(xs.max())]} if len(xs) else {})}
                fitted.append(col | ({"read_as_missing": sorted(words)} if words else {}))
            elif fmt := date_format(present):
                days = date_parts(parse_dates(present, fmt))[0]
                days = days[~np.isnan(days)]
                fitted.append({"name": name, "type": "date", "format": fmt, "mean": float(days.mean()),
                               "std": float(days.std()) if days.std() > 1e-12 else 1.0,
                               "missing_indicator": len(days) < len(values)})
            elif len(present) >= IDENTIFIER_MIN_ROWS and len(counts) == len(present):
                ignored[name] = "a different value in every row (an identifier)"
            else:
                top = sorted(counts, key=lambda c: (-counts[c], c))[:MAX_CATEGORIES]
                fitted.append({"name": name, "type": "categorical", "categories": sorted(top)})
        if not fitted:
            raise UserError(f"no usable feature columns: {', '.join(f'{n} is {why}' for n, why in ignored.items())}")
        self.columns, self.target, self.ignored = fitted, target, ignored
        return self

    def notes(self) -> list[str]:
        """What fit decided about columns that a reader should know: words read as gaps, dates, columns left out."""
        words = [f"{c['name']}: {', '.join(map(repr, c['read_as_missing']))} read as missing"
                 for c in self.columns or [] if c.get("read_as_missing")]
        dates = [f"{c['name']}: dates ({c['format']})" for c in self.columns or [] if c["type"] == "date"]
        return words + dates + [f"{name} left out: {why}" for name, why in self.ignored.items()]

    def unreadable_cells(self, rows: list[dict]) -> list[tuple[int, str, str]]:
        """(row index, column, why) for each present cell that a numeric or date column cannot read: `transform`
        takes it as missing, which a user should hear about (a typo, a unit in the cell, another date format)."""
        found = []
        for col in self.columns or []:
            if col["type"] not in ("numeric", "date"):
                continue
            values = [row.get(col["name"]) for row in rows]
            gaps = set(col.get("read_as_missing", []))
            given = [v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v).strip() not in gaps
                     for v in values]
            if col["type"] == "numeric":
                unread = [_as_number(v) is None for v in values]
                why = "is not a number"
            else:  # one parse of the whole column: a file of many rows is read once
                unread = parse_dates(values, col["format"]).isna().tolist()
                why = f"is not a date like the training rows' ({col['format']})"
            found += [(i, col["name"], f"{values[i]!r} {why}") for i in range(len(rows)) if given[i] and unread[i]]
        return found

    def clipped_cells(self, rows: list[dict]) -> list[tuple[int, str, str]]:
        """(row index, column, why) for each number `transform` clips: further from the training range than the
        range's own width (1e308 in a price column, a misplaced decimal point)."""
        found = []
        for col in self.columns or []:
            if col["type"] != "numeric" or "range" not in col:
                continue
            lo, hi = _clip_bounds(col)
            for i, row in enumerate(rows):
                x = _as_number(row.get(col["name"]))
                if x is not None and not lo <= x <= hi:
                    found.append((i, col["name"], f"{x:g} is far outside the training rows' {col['range'][0]:g} to "
                                                  f"{col['range'][1]:g}; read as {min(max(x, lo), hi):g}"))
        return found

    def missing_columns(self, available) -> list[str]:
        available = set(available)
        return [n for n in self.names if n not in available]

    def transform(self, rows: list[dict]) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("ColumnEncoder.transform before fit")
        present = set.intersection(*(set(r) for r in rows)) if rows else set(self.names)
        missing = self.missing_columns(present)
        if missing:
            raise UserError(f"the rows lack column(s) the model was trained on: {', '.join(missing)} "
                            f"(it reads {', '.join(self.names)})")
        out = np.zeros((len(rows), self.n_features), dtype=np.float32)
        j = 0
        for col in self.columns:
            values = [r[col["name"]] for r in rows]
            if col["type"] == "numeric":
                xs = np.array([np.nan if (x := _as_number(v)) is None else x for v in values], dtype=np.float64)
                gap = np.isnan(xs)
                if "range" in col:  # an MLP extrapolates without bound: 1e308 gave NaN probabilities
                    xs = np.clip(xs, *_clip_bounds(col))
                out[:, j] = np.where(gap, 0.0, (xs - col["mean"]) / col["std"])
                if col["missing_indicator"]:
                    out[:, j + 1] = gap
            elif col["type"] == "date":
                days, cycles = date_parts(parse_dates(values, col["format"]))
                gap = np.isnan(days)
                out[:, j] = np.where(gap, 0.0, (days - col["mean"]) / col["std"])
                out[:, j + 1:j + DATE_PARTS] = cycles
                if col["missing_indicator"]:
                    out[:, j + DATE_PARTS] = gap
            else:
                index = {c: i for i, c in enumerate(col["categories"])}
                other = len(col["categories"])
                slots = [index.get(_category(v), other) for v in values]
                out[np.arange(len(rows)), j + np.asarray(slots, dtype=np.int64)] = 1.0
            j += self._width(col)
        return torch.from_numpy(out)

    def spans(self) -> list[slice]:
        """Each column's slice of the encoded features (a one-hot block; a number or date with its gap flag)."""
        ends = np.cumsum([self._width(c) for c in self.columns or []])
        return [slice(int(end - self._width(c)), int(end)) for c, end in zip(self.columns or [], ends)]

    def to_dict(self) -> dict:
        return {"kind": "columns", "target": self.target, "columns": self.columns, "ignored": self.ignored}

    @classmethod
    def from_dict(cls, d: dict) -> "ColumnEncoder":
        return cls(d.get("columns"), d.get("target"), d.get("ignored"))

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.columns, sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        if not self.fitted:
            return "per table"
        return f"{len(self.columns)} columns -> {self.n_features} features"

    def summary(self) -> dict:
        kinds = Counter(c["type"] for c in self.columns or [])
        return {"numeric": kinds.get("numeric", 0), "categorical": kinds.get("categorical", 0), "date": kinds.get("date", 0),
                "with_missing_indicator": [c["name"] for c in self.columns or [] if c.get("missing_indicator")],
                "read_as_missing": {c["name"]: c["read_as_missing"] for c in self.columns or [] if c.get("read_as_missing")},
                "ignored": self.ignored}


class EncodedRows(Dataset):
    """Rows encoded once into a [N, F] tensor; items are feature vectors."""

    def __init__(self, features: torch.Tensor):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.features[i]


class CorruptedRows(Dataset):
    """SCARF's views of encoded rows (Bahri et al. 2022): on every access a random `rate` share of a row's columns take
    another random row's values, i.e. draws from each column's own distribution in the data, whole columns at a time
    (a one-hot block stays one-hot). Two such views of a row differ in about half of its columns at 0.3, the share
    SCARF corrupts in its one corrupted view (0.6)."""

    def __init__(self, features: torch.Tensor, spans: list[slice], rate: float):
        self.features, self.spans, self.rate = features, spans, rate

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> torch.Tensor:
        row = self.features[i].clone()
        donors = torch.randint(len(self.features), (len(self.spans),))
        for k in torch.nonzero(torch.rand(len(self.spans)) < self.rate).flatten().tolist():
            row[self.spans[k]] = self.features[donors[k], self.spans[k]]
        return row


CORRUPTION = 0.3  # per view: the share of a row's columns replaced (CorruptedRows)


class MLPBody(Backbone):
    """An MLP over the encoded columns, trained by headstart, wide and deep: its features are the last block's
    output beside the encoded columns themselves. Untrained, the head is first solved on the columns alone (ridge or
    logistic regression: the classical model) and the blocks start to count only as fine-tuning gives their weights
    in the head a value, kept when validation says so. The plain MLP (wide=False, the earlier body) lost to ridge by
    0.07 R² on Carseats and 0.04 on diabetes; the wide one is level there and keeps the MLP's lead where the
    columns act non-linearly (benchmarks/tables.py)."""

    modality = "tabular"
    # A body trained from random init on a few hundred rows or fewer: the CNN defaults (10 epochs, no early stop)
    # give a 16-row table 10 optimizer steps. Chosen on Carseats' US == Yes stores only, simulating 20 and 80
    # training rows there (benchmarks/tabular.py): 200 epochs with patience 20 at 3e-3 beat 10 and 100 epochs.
    default_hparams = {"epochs": 200, "patience": 20, "lr": 3e-3}
    pretrain_epochs = 50  # contrastive learning gains slowly (SCARF trains for hundreds), and the body costs little

    def __init__(self, name: str = "mlp", hidden=HIDDEN, dropout: float = DROPOUT, encoder: ColumnEncoder | None = None,
                 pretrained: bool = False, wide: bool | None = None):
        super().__init__()
        self.name, self.hidden, self.dropout = name, tuple(int(h) for h in hidden), float(dropout)
        self.wide = WIDE if wide is None else wide
        self.preprocess = encoder or ColumnEncoder()
        self.pretrained = pretrained
        # Until `adapt` fits the encoder the input width is unknown: a 1-feature placeholder, rebuilt there.
        self._build(self.preprocess.n_features if self.preprocess.fitted else 1)

    def _build(self, in_dim: int) -> None:
        """The layers for `in_dim` encoded features, freshly initialised (the global seed decides the draw)."""
        blocks, d = [], in_dim
        for h in self.hidden:
            blocks.append(nn.Sequential(nn.Linear(d, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(self.dropout)))
            d = h
        self.blocks = nn.ModuleList(blocks)
        self.deep_dim = d
        self.feature_dim = d + (in_dim if self.wide else 0)
        # The initial draw's digest: a fresh body's features are cached only under the exact weights that made them.
        self.weights_id = f"init-{state_digest(self)}"

    def example_batch(self, n: int = 2) -> torch.Tensor:
        return torch.randn(n, self.preprocess.n_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        deep = x
        for block in self.blocks:
            deep = block(deep)
        return torch.cat([deep, x], 1) if self.wide else deep

    @property
    def starts_linear(self) -> bool:  # a property: `compare`'s from-scratch control reinitialises a reused body
        return self.wide and not self.pretrained

    def raw_inputs_of(self, feats: torch.Tensor) -> torch.Tensor:
        if not self.wide:
            return feats
        kept = feats.clone()
        kept[:, :self.deep_dim] = 0  # ridge and logistic regression give a column of zeros no weight
        return kept

    def layer_groups(self) -> list[list[nn.Module]]:
        return [[m for m in block if list(m.parameters(recurse=False))] for block in self.blocks]

    def dataset(self, inputs: list, train: bool) -> Dataset:
        return EncodedRows(self.preprocess.transform(inputs))

    def views(self, inputs: list, cfg) -> Dataset:
        return CorruptedRows(self.preprocess.transform(inputs), self.preprocess.spans(), CORRUPTION)

    def adapt(self, data, cfg) -> dict:
        """A fresh body fits the encoder to the training rows and sizes its input layer; a reused one keeps both."""
        rows = [x for x, _ in data.train]
        columns = data.info.get("columns") or (list(rows[0]) if rows else [])
        enc = self.preprocess
        if not enc.fitted:
            enc.fit(rows, columns, target=data.info.get("target") or cfg.target)
            self._build(enc.n_features)
            notes = "".join(f"; {note}" for note in enc.notes())
            return {"input": f"{enc.describe()} (encoder fitted on {len(rows)} training rows{notes})",
                    "encoder": enc.summary(), "hidden": list(self.hidden), "dropout": self.dropout}
        missing = enc.missing_columns(columns)
        if missing:
            source = getattr(self, "source_run", None)
            where = f"the body of run:{source}" if source else "this body"
            from headstart.data.tabular import target_columns

            targets = set(target_columns(data.info.get("target") or cfg.target, missing))
            if targets & set(missing):  # the body read this fit's target as a feature (pretrain without --target)
                raise UserError(f"{where} was trained with {', '.join(sorted(targets & set(missing)))} as an input "
                                "column, which this fit predicts: a body must not read its label; pre-train (or fit) "
                                f"it again with --target {cfg.target}")
            raise UserError(f"{cfg.data} lacks column(s) that {where} was trained on: {', '.join(missing)} "
                            f"(it reads {', '.join(enc.names)}; columns are matched by name)")
        extra = [c for c in columns if c not in set(enc.names)]
        enc.target = data.info.get("target") or cfg.target  # the transform is the source's; the label is this data's
        why = f"{enc.describe()} (encoder kept from the reused body"
        why += f"; {len(extra)} extra column(s) ignored: {', '.join(extra)})" if extra else ")"
        return {"input": why, "encoder": enc.summary(), "ignored_columns": extra, "hidden": list(self.hidden),
                "dropout": self.dropout}

    def spec(self) -> dict:
        return {"adapter": "tabular-mlp", "name": self.name, "hidden": list(self.hidden), "dropout": self.dropout,
                "wide": self.wide, "preprocess": self.preprocess.to_dict()}

    @classmethod
    def from_spec(cls, spec: dict, folder=None) -> "MLPBody":
        """Architecture and encoder from the saved JSON; the saved state dict fills the weights."""
        body = cls(spec.get("name", "mlp"), spec["hidden"], spec.get("dropout", DROPOUT),
                   ColumnEncoder.from_dict(spec["preprocess"]), pretrained=True,
                   wide=spec.get("wide", False))
        body.weights_id = "restored"
        return body


def _create_mlp(weights: str | None = None) -> MLPBody:
    if weights:
        raise UserError("--weights does not apply to mlp (it starts from random initialisation); "
                        "to start from a trained body use --model run:DIR")
    return MLPBody()


BACKBONES.register("mlp")(BackboneInfo("mlp", _create_mlp, offline=True, modality="tabular",
                                       source="trained by headstart (random init)"))
ADAPTERS.register("tabular-mlp")(MLPBody.from_spec)
