"""Tabular data and the MLP body; `--model run:DIR` (develop a source model, then reuse its body)."""
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import headstart as hs
from headstart.backbones.tabular import ColumnEncoder, MLPBody
from headstart.cli import main
from headstart.config import FitConfig
from headstart.data import resolve_modality
from headstart.data.tabular import Tables, detect_task
from headstart.errors import UserError

# A from-scratch MLP on a few hundred rows needs more epochs than the image defaults (10, the whole schedule).
FAST = dict(epochs=60, patience=10, lr=3e-3, batch_size=32, num_workers=0, progress=False)


def make_table(path: Path, n: int = 240, seed: int = 0, shift: float = 0.0, extra: bool = False) -> Path:
    """Numeric a, b (a has gaps), categorical c (has gaps), integer d; y a smooth function of them, 2 rows unlabeled."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.uniform(-2, 2, size=n)
    c = rng.choice(["x", "y", "z"], size=n)
    d = rng.integers(0, 5, size=n)
    y = 2 * a + np.sin(2 * b) + np.select([c == "x", c == "y"], [1.5, -1.0], 0.0) + 0.3 * d + shift + rng.normal(0, 0.2, n)
    df = pd.DataFrame({"a": a, "b": b, "c": c, "d": d, "y": y})
    df["label"] = np.where(y > np.median(y), "high", "low")
    if extra:
        df["noise"] = rng.normal(size=n)
    df.loc[rng.choice(n, 12, replace=False), "a"] = np.nan
    df.loc[rng.choice(n, 8, replace=False), "c"] = np.nan
    df.loc[[3, 7], ["y", "label"]] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def features(df: pd.DataFrame, drop=("y", "label")) -> list[dict]:
    return [{k: (None if pd.isna(v) else v) for k, v in r.items() if k not in drop} for r in df.to_dict("records")]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A regression run on the synthetic table, shared by the read-only tests and the transfer tests."""
    root = tmp_path_factory.mktemp("tabular_source")
    data = make_table(root / "source.csv")
    pd.read_csv(data).drop(columns=["label"]).to_csv(data, index=False)
    run = hs.fit(str(data), target="y", strategy="finetune", out=str(root / "run"), cache_dir=str(root / "cache"), **FAST)
    return run, data


# ---- loader ----

def test_loader_splits_skips_and_counts_missing(tmp_path):
    data = make_table(tmp_path / "t.csv", n=200)
    loaded = Tables().load(FitConfig(data=str(data), target="y"))
    assert loaded.modality == "tabular" and loaded.task == "regression" and loaded.classes == ["y"]
    sizes = [len(loaded.train), len(loaded.val), len(loaded.test)]
    assert sizes == [143, 25, 30]  # test: 15% of all rows; val: 15% of the rest (as for images)
    assert [w for w, _ in loaded.skipped] == [f"{data} row 5", f"{data} row 9"]  # header is row 1
    assert all("missing target" in r for _, r in loaded.skipped)
    x, y = loaded.train[0]
    assert set(x) == {"a", "b", "c", "d", "label"} and isinstance(y, float)
    summary = loaded.summary()
    assert summary["missing"] == {"a": 12, "c": 8} and summary["columns"] == ["a", "b", "c", "d", "label"]
    assert len(summary["skipped"]) == 2


def test_classification_split_is_stratified_and_classes_sorted(tmp_path):
    data = make_table(tmp_path / "t.csv", n=200)
    pd.read_csv(data).drop(columns=["y"]).to_csv(data, index=False)
    loaded = Tables().load(FitConfig(data=str(data), target="label"))
    assert loaded.task == "classification" and loaded.classes == ["high", "low"]
    for split in (loaded.train, loaded.val, loaded.test):
        share = np.mean([y for _, y in split])
        assert 0.4 <= share <= 0.6
    assert len(loaded.skipped) == 2


def test_task_auto_detection():
    assert detect_task([0.5, 1.0, 2.0]) == "regression"  # fractional
    assert detect_task(list(range(50))) == "regression"  # many distinct integers
    assert detect_task([1, 2, 3, 1, 2] * 10) == "classification"  # few integer codes
    assert detect_task(["a", "b", "a"]) == "classification"
    assert detect_task(list(range(50)), "classification") == "classification"



def test_gap_words_in_a_numeric_target_are_skipped_rows_not_classes(tmp_path):
    data = make_table(tmp_path / "t.csv", n=200)
    df = pd.read_csv(data)
    df["y"] = df["y"].astype(object)
    df.loc[[10, 20, 30], "y"] = "?"  # spreadsheet rows 12, 22, 32
    df.to_csv(data, index=False)
    assert detect_task(["?", 0.5, 1.5] + [float(i) for i in range(40)]) == "regression"
    loaded = Tables().load(FitConfig(data=str(data), target="y"))
    assert loaded.task == "regression"
    read_as_missing = {w for w, r in loaded.skipped if "read as missing" in r}
    assert read_as_missing == {f"{data} row {n}" for n in (12, 22, 32)}
    assert len(loaded.train) + len(loaded.val) + len(loaded.test) == 200 - 2 - 3
    ids = pd.DataFrame({"a": range(60), "who": [f"person {i}" for i in range(60)]})
    ids.to_csv(tmp_path / "ids.csv", index=False)
    with pytest.raises(UserError, match="'who' has 60 distinct values in 60 rows.*--task regression"):
        Tables().load(FitConfig(data=str(tmp_path / "ids.csv"), target="who"))


def test_stratified_split_with_many_single_row_classes_keeps_its_fraction():
    from headstart.data.splits import stratified_split

    labels = list(range(90)) + [0] * 10  # 90 classes over 100 rows: one row for most of them
    kept, off = stratified_split(list(range(100)), labels, 0.15, seed=0)
    assert len(off) == 15 and len(kept) == 85, "not one held-out row per class (90 of 100)"
    imbalanced = [0] * 60 + [c for c in range(1, 10) for _ in range(4)]  # proportions give 4-image classes no test row
    kept, off = stratified_split(list(range(96)), imbalanced, 0.15, seed=0)
    assert len(off) == 14 and {imbalanced[i] for i in off} == set(range(10)), "every class of 3+ images is held out once"
    assert sorted(kept + off) == list(range(96))
    balanced = [c for c in range(4) for _ in range(25)]
    from sklearn.model_selection import train_test_split
    assert stratified_split(list(range(100)), balanced, 0.2, seed=3)[1] == train_test_split(
        list(range(100)), test_size=20, random_state=3, stratify=balanced)[1], "no class missing: scikit-learn's split"
    few_shot = [c for c in range(5) for _ in range(3)]  # 5 classes x 3: every class on both sides, as before
    kept, off = stratified_split(list(range(15)), few_shot, 0.15, seed=0)
    assert sorted(few_shot[i] for i in off) == [0, 1, 2, 3, 4] and {few_shot[i] for i in kept} == {0, 1, 2, 3, 4}


def test_numbers_as_spreadsheets_export_them_are_numbers():
    from headstart.data.tabular import as_number

    exported = {"$1,200": 1200.0, "-€3.50": -3.5, "$ -5": -5.0, "12%": 12.0, "1,234,567.5": 1234567.5, ".5%": 0.5}
    assert {text: as_number(text) for text in exported} == exported
    for ambiguous_or_not_a_number in ("1,23", "12,5", "1 2", "(5.00)", "$", "%", "-", "inf", float("inf"), "--5"):
        assert as_number(ambiguous_or_not_a_number) is None, ambiguous_or_not_a_number
    prices = [{"price": f"${p:,}"} for p in range(900, 1400, 10)]  # "$1,000": a currency column, ordered, not categories
    encoder = ColumnEncoder().fit(prices, ["price"])
    assert encoder.columns[0]["type"] == "numeric" and detect_task([r["price"] for r in prices]) == "regression"

def test_wrong_target_lists_the_columns(tmp_path):
    data = make_table(tmp_path / "t.csv", n=40)
    with pytest.raises(UserError, match="no column 'price'.*columns found: a, b, c, d, y, label"):
        Tables().load(FitConfig(data=str(data), target="price"))
    with pytest.raises(UserError, match="needs --target"):
        Tables().load(FitConfig(data=str(data), modality="tabular"))


def test_detection_and_folder_layout(tmp_path):
    data = make_table(tmp_path / "t.csv", n=60)
    assert resolve_modality(FitConfig(data=str(data), target="y")).name == "tabular"
    assert not Tables().claims(data, FitConfig(data=str(data)))  # no --target: not claimed
    folder = tmp_path / "split"
    folder.mkdir()
    df = pd.read_csv(data)
    df[:40].to_csv(folder / "train.csv", index=False)
    df[40:].to_csv(folder / "test.csv", index=False)
    assert resolve_modality(FitConfig(data=str(folder), target="y")).name == "tabular"
    loaded = Tables().load(FitConfig(data=str(folder), target="y", val_fraction=0.25))
    assert loaded.layout == "table-splits" and len(loaded.test) == 20 and len(loaded.val) == 10
    assert [w for w, _ in loaded.skipped] == [f"{folder / 'train.csv'} row 5", f"{folder / 'train.csv'} row 9"]


def test_parquet(tmp_path):
    df = pd.read_csv(make_table(tmp_path / "t.csv", n=40))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        path = tmp_path / "t.parquet"
        path.write_bytes(b"PAR1")
        with pytest.raises(UserError, match="pip install pyarrow"):
            Tables().load(FitConfig(data=str(path), target="y"))
        return
    df.to_parquet(tmp_path / "t.parquet")
    loaded = Tables().load(FitConfig(data=str(tmp_path / "t.parquet"), target="y"))
    assert len(loaded.train) + len(loaded.val) + len(loaded.test) == 38


# ---- encoder ----

def test_encoder_fit_transform_and_json_round_trip():
    rows = [{"n": 1.0, "m": None, "cat": "a"}, {"n": 3.0, "m": 2.0, "cat": "b"}, {"n": 5.0, "m": 4.0, "cat": None}]
    enc = ColumnEncoder().fit(rows, ["n", "m", "cat"], target="y")
    assert enc.describe() == "3 columns -> 6 features"  # n; m + missing flag; a, b, other/missing
    x = enc.transform(rows)
    assert x.dtype == torch.float32 and x.shape == (3, 6)
    assert torch.allclose(x[:, 0], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4)  # standardised
    assert x[0, 1] == 0 and x[0, 2] == 1 and x[1, 2] == 0  # missing -> mean (0) and the indicator
    assert x[2].tolist()[3:] == [0, 0, 1]  # missing category -> other/missing slot
    again = ColumnEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert torch.equal(again.transform(rows), x) and again.key() == enc.key() and again.target == "y"
    unseen = again.transform([{"n": "7", "m": "oops", "cat": "zzz", "extra": 1}])  # text numbers parse; junk is missing
    assert unseen[0, 0] == pytest.approx(2.4495, abs=1e-4) and unseen[0, 2] == 1 and unseen[0].tolist()[3:] == [0, 0, 1]



def test_encoder_reads_gap_words_in_numbers_as_missing_and_leaves_identifiers_out():
    rows = [{"price": "?" if i % 10 == 0 else 100 + i, "id": f"store-{i}", "size": "S" if i % 2 else "L", "y": i}
            for i in range(40)]
    enc = ColumnEncoder().fit(rows, ["price", "id", "size"], target="y")
    price = enc.columns[0]
    assert price["type"] == "numeric" and price["missing_indicator"] and price["read_as_missing"] == ["?"]
    assert enc.names == ["price", "size"] and "identifier" in enc.ignored["id"]
    assert enc.describe() == "2 columns -> 5 features"  # price + its missing flag; S, L, other
    x = enc.transform([{"price": "?", "size": "S"}, {"price": 139, "size": "L"}])  # no id needed to predict
    assert x[0, :2].tolist() == [0.0, 1.0] and x[1, 0] > 1.0, "a gap sits at the mean with its flag; 139 is high"
    assert any("'?' read as missing" in n for n in enc.notes()) and any(n.startswith("id left out") for n in enc.notes())
    again = ColumnEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert again.ignored == enc.ignored and again.key() == enc.key()
    # pandas' index written by to_csv ("Unnamed: 0"), here the training share of a split: a row number, left out;
    # incomes, as distinct in every row, span far more values than rows and stay
    shuffled = np.random.default_rng(0).permutation(60)[:40]
    numbered = [{"Unnamed: 0": int(k), "income": 20000 + 1013 * int(k) % 7919, "y": i} for i, k in enumerate(shuffled)]
    enc = ColumnEncoder().fit(numbered, ["Unnamed: 0", "income"], target="y")
    assert enc.names == ["income"] and "row number" in enc.ignored["Unnamed: 0"]
    # a column empty or constant in every training row teaches nothing, and predicting does not ask for it
    enc = ColumnEncoder().fit([{"empty": None, "same": "EU", "x": i % 3, "y": i} for i in range(20)], ["empty", "same", "x"])
    assert enc.names == ["x"] and "empty" in enc.ignored["empty"] and "same value (EU)" in enc.ignored["same"]
    assert enc.transform([{"x": 1}]).shape == (1, enc.n_features)
    # 91% numbers, but four distinct words: codes, not gaps, so the column stays a category
    words = [{"v": w} for w in ["a", "b", "c", "d"] + [str(i % 20) for i in range(40)]]
    assert ColumnEncoder().fit(words, ["v"]).columns[0]["type"] == "categorical"
    assert ColumnEncoder().fit(words[1:], ["v"]).columns[0]["type"] == "numeric"  # three words: read as gaps


def test_dates_are_a_trend_and_seasons_read_in_the_training_format():
    import datetime as dt

    days = [dt.date(2021, 1, 1) + dt.timedelta(days=7 * i + i % 3) for i in range(40)]
    rows = [{"when": d.strftime("%d/%m/%Y")} for d in days]  # day first: "13/01/2021" tells the format
    rows[5]["when"] = None
    enc = ColumnEncoder().fit(rows, ["when"])
    col = enc.columns[0]
    assert col["type"] == "date" and col["format"] == "%d/%m/%Y" and col["missing_indicator"]
    assert enc.n_features == 6 and any("dates (%d/%m/%Y)" in n for n in enc.notes())
    x = enc.transform([{"when": "05/01/2021"}, {"when": "05/06/2021"}, {"when": "not a date"}])
    assert x[1, 0] > x[0, 0], "June after January: the day is a trend"
    jan5, jun5 = dt.date(2021, 1, 5), dt.date(2021, 6, 5)  # read day first even alone, as in training
    assert x[0, 3].item() == pytest.approx(np.sin(2 * np.pi * jan5.weekday() / 7), abs=1e-6)
    assert x[1, 1].item() == pytest.approx(np.sin(2 * np.pi * (jun5.month - 1) / 12), abs=1e-6)
    assert x[2].tolist() == [0, 0, 0, 0, 0, 1], "not a date: a gap, flagged"
    again = ColumnEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert torch.equal(again.transform(rows[:3]), enc.transform(rows[:3]))


def test_a_label_that_depends_on_the_weekday_is_learned_from_a_date_column(tmp_path):
    import datetime as dt

    rng = np.random.default_rng(0)
    days = [dt.date(2022, 1, 1) + dt.timedelta(days=int(d)) for d in rng.choice(700, 240, replace=False)]
    df = pd.DataFrame({"day": [d.isoformat() for d in days], "noise": rng.normal(size=240),
                       "busy": ["yes" if d.weekday() >= 5 else "no" for d in days]})
    df.to_csv(tmp_path / "visits.csv", index=False)
    run = hs.fit(str(tmp_path / "visits.csv"), target="busy", out=str(tmp_path / "run"), progress=False)
    assert run.metrics["accuracy"] >= 0.9, "weekends are one weekday cycle apart; a one-hot of the dates knows nothing"

def test_encoder_names_missing_columns():
    enc = ColumnEncoder().fit([{"a": 1, "b": "x", "c": 2}], ["a", "b", "c"])
    with pytest.raises(UserError, match="lack column\\(s\\) .*: a, c"):
        enc.transform([{"b": "x", "other": 1}])


# ---- fitting ----

def test_regression_fit_learns_and_round_trips(source_run, tmp_path):
    run, data = source_run
    assert run.metrics["r2"] > 0.7, run.metrics
    assert run.metrics["stages"]["finetune"]["trainable_params"] > 10_000
    baseline = run.metrics["baseline"]  # no pre-trained body: the classical model on the same rows, said beside it
    assert baseline["name"] == "ridge regression on the raw table" and baseline["metric"] == "r2" and 0.5 < baseline["score"] <= 1
    assert "Classical baseline, ridge regression on the raw table on the same rows" in (run.path / "report.html").read_text()
    assert (run.path / "predicted_vs_true.png").stat().st_size > 5000, "a regression's scored rows, drawn"
    resolved = yaml.safe_load((run.path / "config.yaml").read_text())["resolved"]
    assert resolved["model"] == "mlp" and resolved["backbone_weights"].startswith("init-")
    assert resolved["input"].startswith("4 columns -> 8 features")  # a (+missing flag), b, c (x, y, z, other), d
    rows = features(pd.read_csv(data)[:25])
    before = run.predict_outputs(rows)
    again = hs.load(run.path).predict_outputs(rows)
    assert before.shape == (25,) and np.abs(before - again).max() < 1e-5
    preds = hs.load(run.path).predict(str(data))
    assert len(preds) == 240 and preds[0]["input"] == f"{data}:row 2" and "prediction" in preds[0]
    assert preds[0]["prediction"] == pytest.approx(float(again[0]), abs=1e-5)
    metrics = run.evaluate(str(data), save=False)
    assert metrics["n"] == 238 and len(metrics["skipped"]) == 2 and metrics["r2"] > 0.7 and metrics["scored"] == str(data)


def test_predicting_a_cell_that_is_not_a_number_says_so(source_run, tmp_path, capsys):
    run, data = source_run
    df = pd.read_csv(data)[:4].astype({"b": object})
    df.loc[1, "b"] = "1.5 cm"  # a unit in the cell
    df.to_csv(tmp_path / "new.csv", index=False)
    assert len(run.predict(str(tmp_path / "new.csv"))) == 4  # predicted all the same, the cell counted as missing
    err = capsys.readouterr().err
    assert "warning: 1 cell(s) could not be read" in err and "new.csv:row 3 column b: '1.5 cm' is not a number" in err


def test_a_number_far_outside_the_training_range_is_clipped_and_said(source_run, tmp_path, capsys):
    run, data = source_run
    df = pd.read_csv(data)[:3].drop(columns=["y"])
    df.loc[0, "b"] = 1e308  # b was drawn in -2..2: read as 2 + its width, about 6
    df.loc[1, "b"] = 5.9  # inside the widened range: as given
    df.to_csv(tmp_path / "new.csv", index=False)
    rows = run.predict(str(tmp_path / "new.csv"))
    assert all(np.isfinite(r["prediction"]) for r in rows), rows  # it was NaN, and monitor crashed on it
    err = capsys.readouterr().err
    assert "warning: 1 cell(s) were clipped" in err and "row 2 column b: 1e+308 is far outside" in err
    bound = run.model.backbone.preprocess.clipped_cells([{"b": 1e308}])[0][2].rsplit(" ", 1)[1]
    clipped = df.iloc[:1].assign(b=float(bound)).to_dict("records")
    assert rows[0]["prediction"] == pytest.approx(run.predict_values(clipped)[0]["prediction"], abs=1e-5)
    assert run.monitor(str(tmp_path / "new.csv"), save=False)["inputs"]  # no NaN reaches the drift tests


def test_classification_fit(tmp_path):
    data = make_table(tmp_path / "t.csv", n=240)
    pd.read_csv(data).drop(columns=["y"]).to_csv(data, index=False)
    run = hs.fit(str(data), target="label", strategy="finetune", out=str(tmp_path / "run"), **FAST)
    assert run.classes == ["high", "low"] and run.metrics["accuracy"] >= 0.75, run.metrics
    metrics = run.evaluate(str(data), save=False)
    assert metrics["n"] == 238 and metrics["accuracy"] >= 0.75
    with pytest.raises(UserError, match="setfit reshapes a pre-trained body.*untrained"):
        hs.fit(str(data), target="label", strategy="setfit", out=str(tmp_path / "pairs"), **FAST)


def _body_state(run_path) -> dict:
    return {k: v for k, v in hs.load(run_path).model.backbone.state_dict().items()}


def test_run_source_linear_probe_keeps_the_body(source_run, tmp_path):
    src, _ = source_run
    target = make_table(tmp_path / "target.csv", n=80, seed=1, shift=1.0, extra=True)
    run = hs.fit(str(target), model=f"run:{src.path}", target="y", strategy="linear-probe", out=str(tmp_path / "lp"), **FAST)
    source_body, target_body = _body_state(src.path), _body_state(run.path)
    assert source_body.keys() == target_body.keys()
    assert all(torch.equal(source_body[k], target_body[k]) for k in source_body), "the frozen source body changed"
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    assert cfg["model"] == f"run:{src.path}" and cfg["resolved"]["body_from"] == str(src.path)
    assert cfg["resolved"]["backbone_weights"].startswith("run-")
    assert json.loads((run.path / "model" / "model.json").read_text())["training"]["body_from"] == f"run:{src.path}"
    assert cfg["resolved"]["ignored_columns"] == ["label", "noise"]  # extra columns: ignored and said so
    enc = hs.load(run.path).model.backbone.preprocess
    assert enc.to_dict()["columns"] == src.model.backbone.preprocess.to_dict()["columns"]  # the source's encoder
    assert run.metrics["stages"]["head"]["solver"].startswith("ridge") and run.metrics["r2"] > 0.5


def test_run_source_two_stage(source_run, tmp_path):
    src, _ = source_run
    target = make_table(tmp_path / "target.csv", n=80, seed=2, shift=1.0)
    pd.read_csv(target).drop(columns=["y"]).to_csv(target, index=False)  # a new task: classify, same columns
    run = hs.fit(str(target), model=f"run:{src.path}", target="label", strategy="two-stage", out=str(tmp_path / "ts"), **FAST)
    stages = run.metrics["stages"]
    assert "solver" in stages["head"] and "skipped" not in stages["head"]  # head solved on the frozen source features
    assert stages["finetune"]["epochs_run"] >= 1
    with open(run.path / "history.csv") as f:
        assert {r["stage"] for r in csv.DictReader(f)} == {"head", "finetune"}
    assert yaml.safe_load((run.path / "config.yaml").read_text())["model"] == f"run:{src.path}"
    assert run.classes == ["high", "low"] and run.metrics["accuracy"] >= 0.6


def test_run_source_missing_columns(source_run, tmp_path):
    src, _ = source_run
    target = make_table(tmp_path / "target.csv", n=60, seed=3)
    pd.read_csv(target).drop(columns=["a", "d"]).to_csv(target, index=False)
    with pytest.raises(UserError, match=r"lacks column\(s\) that the body of run:.* was trained on: a, d"):
        hs.fit(str(target), model=f"run:{src.path}", target="y", strategy="two-stage", out=str(tmp_path / "x"), **FAST)


def test_cli_fit_and_predict_csv(tmp_path, capsys):
    data = make_table(tmp_path / "t.csv", n=240)  # 36 validation rows: enough to judge fine-tuning (auto's rule 1)
    out = tmp_path / "run"
    assert main(["fit", str(data), "--target", "y", "--out", str(out), "--no-progress", "--epochs", "20", "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "regression on y" in printed and "picked two-stage: the body is untrained and passes its inputs through" in printed  # default auto
    filled = yaml.safe_load((out / "config.yaml").read_text())["resolved"]["training_defaults"]
    assert filled["patience"] == MLPBody.default_hparams["patience"] and filled["lr"] == MLPBody.default_hparams["lr"]
    stages = json.loads((out / "metrics.json").read_text())["stages"]
    assert stages["head"]["solver"].startswith("ridge") and stages["finetune"]["epochs_run"] >= 1  # the linear start
    assert main(["predict", str(out), str(data), "--format", "csv"]) == 0
    rows = [r for r in csv.reader(capsys.readouterr().out.splitlines()) if r]
    assert rows[0] == ["input", "prediction"] and len(rows) == 241 and rows[1][0] == f"{data}:row 2"
    float(rows[1][1])
    assert main(["fit", str(data), "--target", "nope", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "columns found: a, b, c, d, y, label" in capsys.readouterr().err


# ---- run:DIR for images ----

def test_run_source_images(tiny_images, tmp_path):
    from conftest import make_images

    opts = dict(image_size=64, head_epochs=10, batch_size=8, num_workers=0, progress=False)
    source = hs.fit(str(tiny_images), strategy="linear-probe", out=str(tmp_path / "src"), **opts)
    target_data = make_images(tmp_path / "two", classes=("red", "blue"), per_class=10, seed=5)
    run = hs.fit(str(target_data), model=f"run:{source.path}", strategy="linear-probe", out=str(tmp_path / "dst"), **opts)
    assert run.classes == ["blue", "red"] and run.metrics["accuracy"] >= 0.8
    a, b = _body_state(source.path), _body_state(run.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert yaml.safe_load((run.path / "config.yaml").read_text())["model"] == f"run:{source.path}"


def test_raw_table_baseline_and_compare_with_a_source_run(source_run, tmp_path):
    rows_df = pd.read_csv(make_table(tmp_path / "t.csv", n=160, seed=1, shift=1.0)).dropna(subset=["y"])
    rows = list(zip(features(rows_df), rows_df["y"].astype(float)))
    name, r2 = Tables().classical_baseline(rows[:120], rows[120:], "regression")
    assert name == "ridge regression on the raw table" and 0.6 < r2 < 0.95, r2  # linear in a, c, d; sin(2b) is not
    by_category = [({"c": c}, int(c == "x")) for c in ["x", "y", "z"] * 12]
    assert Tables().classical_baseline(by_category[:27], by_category[27:], "classification")[1] == 1.0, "categories one-hot"

    run, _ = source_run
    data = tmp_path / "target.csv"
    rows_df.drop(columns=["label"]).to_csv(data, index=False)
    with pytest.raises(UserError, match="mlp starts from random initialisation.*--model run:DIR"):
        hs.compare(str(data), target="y", out=str(tmp_path / "none"), **FAST)  # nothing to transfer: no verdict on it
    assert not (tmp_path / "none").exists(), "no empty run folder left behind"
    result = hs.compare(str(data), model=f"run:{run.path}", target="y", fractions="1", out=str(tmp_path / "cmp"),
                        **{**FAST, "epochs": 8})
    full = result["fractions"]["1"]
    assert result["score"] == "r2" and full["baseline"]["name"] == "ridge regression on the raw table"
    assert {"transfer", "scratch"} <= set(full) and len(full["scratch"]["curve"]) == 8


def test_run_source_head_is_re_expressed_in_the_new_target_scale(source_run):
    from headstart.backbones.run_source import body_of_run, source_head_state
    from headstart.heads import build_head
    from headstart.tasks import make_task

    src, _ = source_run
    body = body_of_run(str(src.path))
    task = make_task("regression")
    task.target_scale = {"mean": 5.0, "std": 3.0}  # the new data's standardisation, not the source's
    head = build_head(src.model.head_name, body.feature_dim, 1)
    head.load_state_dict(source_head_state(body, src.model.head_name, task, src.classes))
    x = torch.randn(6, body.feature_dim)
    with torch.no_grad():
        assert np.allclose(task.predictions(head(x)), src.model.task.predictions(src.model.head(x)), atol=1e-4)
    other = make_task("classification")
    assert source_head_state(body, src.model.head_name, other, ["high", "low"]) is None, "another task: a new head"


def test_run_source_same_task_keeps_the_better_of_its_head_and_a_new_solve(source_run, tmp_path):
    src, _ = source_run
    target = make_table(tmp_path / "more.csv", n=60, seed=5)  # more rows of the source's own task
    pd.read_csv(target).drop(columns=["label"]).to_csv(target, index=False)
    run = hs.fit(str(target), model=f"run:{src.path}", target="y", strategy="linear-probe", out=str(tmp_path / "lp"), **FAST)
    note = run.metrics["stages"]["head"]
    assert note["best_val_loss"] == min(note["source_head_val_loss"], note["solved_val_loss"])
    assert ("kept" in note) == (note["source_head_val_loss"] <= note["solved_val_loss"])
    assert "same classes" in yaml.safe_load((run.path / "config.yaml").read_text())["resolved"]["head_from"]


def test_an_untrained_mlp_starts_from_the_linear_model_and_fine_tunes_from_there(tmp_path):
    """The mlp is wide and deep: its head is first solved on the raw encoded columns alone (the classical model), the
    random blocks' weights in the head left at zero, then every layer trains and must beat that start on validation."""
    from headstart.heads import sole_linear_layer

    data = make_table(tmp_path / "t.csv", n=240)
    pd.read_csv(data).drop(columns=["label"]).to_csv(data, index=False)
    probe = hs.fit(str(data), target="y", strategy="linear-probe", out=str(tmp_path / "lp"), **FAST)
    body, weight = probe.model.backbone, sole_linear_layer(probe.model.head).weight
    assert body.wide and weight.shape[1] == body.deep_dim + body.preprocess.n_features
    assert torch.all(weight[:, :body.deep_dim] == 0) and weight[:, body.deep_dim:].abs().sum() > 0
    assert probe.metrics["r2"] == pytest.approx(probe.metrics["baseline"]["score"], abs=1e-4), "ridge on the same columns"
    loaded = hs.load(probe.path)
    assert loaded.model.backbone.wide, "model.json keeps the body wide"
    assert [p["prediction"] for p in loaded.predict(str(data))] == pytest.approx([p["prediction"] for p in probe.predict(str(data))], abs=1e-5)

    run = hs.fit(str(data), target="y", out=str(tmp_path / "auto"), **FAST)
    assert run.metrics["stages"]["auto"]["picked"] == "two-stage"
    assert run.metrics["stages"]["head"]["solver"].startswith("ridge")
    starts = [row for row in run.history if row["stage"] == "finetune" and int(row["epoch"]) == 0]
    assert starts and float(starts[0]["val_loss"]) == pytest.approx(run.metrics["stages"]["head"]["best_val_loss"], abs=1e-4), \
        "fine-tuning is scored against the linear start"
    assert run.metrics["stages"]["finetune"]["best_val_loss"] <= run.metrics["stages"]["head"]["best_val_loss"] + 1e-6


def test_a_target_of_joined_labels_is_multi_label(tmp_path):
    """'a;b' targets: --task auto reads sets of labels, as for images and texts (there were 4 combinations, 26 rows
    in the rarest, and a table could not be fitted multi-label at all: every row was skipped)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    tags = [";".join(t for t, on in (("a", row[0] > 0), ("b", row[1] > 0.3)) if on) or "none" for row in x]
    pd.DataFrame({"p": x[:, 0], "q": x[:, 1], "r": x[:, 2], "tags": tags}).to_csv(tmp_path / "t.csv", index=False)
    run = hs.fit(str(tmp_path / "t.csv"), target="tags", out=str(tmp_path / "run"), **FAST)
    assert run.model.task.name == "multilabel" and run.classes == ["a", "b", "none"]
    assert run.metrics["f1_micro"] > 0.75, run.metrics
    clear = [i for i, row in enumerate(x) if row[0] > 1 and row[1] > 1.3]  # far inside "a;b"
    rows = hs.load(run.path).predict(str(tmp_path / "t.csv"))
    assert clear and all(set(rows[i]["labels"]) == {"a", "b"} for i in clear), [rows[i] for i in clear]
    metrics = hs.load(run.path).evaluate(str(tmp_path / "t.csv"), save=False)  # the label sets read back as targets
    assert metrics["n"] == 200 and metrics["f1_micro"] > 0.75 and [c["class"] for c in metrics["per_class"]] == run.classes


def test_a_small_table_is_fitted_with_the_linear_model_on_every_row(tmp_path):
    """Too few validation rows to tell a trained body from the linear start: auto keeps the linear model (ridge on the
    encoded columns) and, nothing chosen on validation, refits it on train + val."""
    data = make_table(tmp_path / "t.csv", n=60)
    pd.read_csv(data).drop(columns=["label"]).to_csv(data, index=False)
    run = hs.fit(str(data), target="y", out=str(tmp_path / "run"), progress=False)
    auto = run.metrics["stages"]["auto"]
    assert auto["picked"] == "linear-probe" and "validation rows" in auto["reason"], auto
    assert run.metrics["refit"]["fitted_once"] and "validation rows" in run.metrics["refit"]["reason"]
    assert run.metrics["r2"] == pytest.approx(run.metrics["baseline"]["score"], abs=1e-3), "ridge on the same rows"
    assert run.metrics["refit"]["rows"] == 58 - run.metrics["n"], "every labeled row but the test split's"


def test_stray_spaces_in_headers_labels_and_categories_are_not_new_names(tmp_path):
    from headstart.data.tabular import load_table_data

    df = pd.read_csv(make_table(tmp_path / "t.csv"))
    df.loc[df.index[:5], "label"] += " "  # "high " is high
    df.loc[df.index[:5], "c"] = df.loc[df.index[:5], "c"].fillna("x") + "  "
    df.rename(columns={"b": "b "}).to_csv(tmp_path / "spaces.csv", index=False)
    data = load_table_data(tmp_path / "spaces.csv", "label")
    assert data.classes == ["high", "low"]
    rows = [x for x, _ in data.train + data.val + data.test]
    assert all("b" in r and "b " not in r for r in rows)
    assert {r["c"] for r in rows} <= {"x", "y", "z", None}


def test_a_semicolon_table_with_decimal_commas_reads_as_numbers(tmp_path):
    from headstart.data.tabular import load_table_data

    df = pd.read_csv(make_table(tmp_path / "t.csv"))
    df.to_csv(tmp_path / "semi.csv", sep=";", decimal=",", index=False)
    data, expected = load_table_data(tmp_path / "semi.csv", "label"), load_table_data(tmp_path / "t.csv", "label")
    assert data.classes == expected.classes and data.train == expected.train
    assert isinstance(data.train[0][0]["b"], float)


def test_options_other_kinds_of_data_read_are_said_not_used(tmp_path, capsys):
    data = make_table(tmp_path / "t.csv", n=120)
    hs.fit(str(data), target="y", strategy="linear-probe", image_size=64, text_column="review",
           out=str(tmp_path / "run"), **FAST)
    err = capsys.readouterr().err
    assert "--image-size applies to image and audio data" in err and "--text-column applies to text data" in err
    assert "--target" not in err and err.count("is not used") == 2


def test_a_run_body_of_another_kind_than_the_data_is_refused_by_name(source_run, tiny_images, tmp_path):
    """A table's body on image folders failed as "a tabular folder needs train.csv"."""
    src, _ = source_run
    with pytest.raises(UserError, match=rf"{tiny_images} holds image data, but --model run:{src.path} reads tabular "
                                        r"data: use a backbone for image data \(e.g. efficientnet_lite0\)"):
        hs.fit(str(tiny_images), model=f"run:{src.path}", out=str(tmp_path / "x"), **FAST)
