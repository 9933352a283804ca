"""Text classification: the loader, the MiniLM backbone contract, fit/load/predict end to end, CLI, and SST-2."""
import csv
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

import headstart as hs
from headstart.cli import main
from headstart.config import FitConfig
from headstart.data import MODALITIES
from headstart.data.text import Texts, load_text_data
from headstart.errors import UserError

from conftest import needs_shared

POSITIVE = ["great", "wonderful", "excellent", "delightful", "brilliant", "lovely", "superb", "moving"]
NEGATIVE = ["terrible", "awful", "boring", "dreadful", "horrible", "dull", "painful", "tedious"]
THINGS = ["film", "movie", "story", "acting", "plot", "ending", "cast", "script"]
FAST = dict(epochs=1, batch_size=8, progress=False)


def sentiment_rows(n: int = 40, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        word = rng.choice(POSITIVE if i % 2 else NEGATIVE)
        rows.append((f"the {rng.choice(THINGS)} was {word}, truly {word} from start to finish", label))
    return rows


def write_csv(path: Path, rows, header=("text", "label"), delimiter=",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "reviews.csv", sentiment_rows())


@pytest.fixture(scope="session")
def backbone():
    from headstart.backbones import create_backbone

    return create_backbone("minilm-l6").eval()


@pytest.fixture(scope="session")
def text_run(tmp_path_factory):
    """One two-stage fit on made-up sentiment, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("text_run")
    data = write_csv(root / "reviews.csv", sentiment_rows())
    return hs.fit(str(data), strategy="two-stage", out=str(root / "run"), cache_dir=str(root / "cache"), **FAST)


# ---------------------------------------------------------------- loader


def test_csv_is_split_stratified_with_sorted_classes(tmp_path):
    rows = [(f"text number {i}", ["b", "a", "c"][i % 3]) for i in range(60)]
    data = load_text_data(write_csv(tmp_path / "d.csv", rows), val_fraction=0.2, test_fraction=0.2)
    assert data.modality == "text" and data.classes == ["a", "b", "c"] and data.layout == "file"
    assert (len(data.train), len(data.val), len(data.test)) == (38, 10, 12)  # val is a fraction of what the test split leaves
    assert {y for _, y in data.test} == {0, 1, 2} and not data.skipped
    assert {x for x, _ in data.train + data.val + data.test} == {t for t, _ in rows}


def test_tsv_and_jsonl_read_like_csv(tmp_path):
    rows = sentiment_rows(20) + [('she said "fine"\tand left', "negative")]  # quoted as pandas/csv write TSV
    from_csv = load_text_data(write_csv(tmp_path / "d.csv", rows))
    from_tsv = load_text_data(write_csv(tmp_path / "d.tsv", rows, delimiter="\t"))
    from_jsonl = load_text_data(write_jsonl(tmp_path / "d.jsonl", rows))
    for other in (from_tsv, from_jsonl):
        assert other.classes == from_csv.classes
        assert sorted(other.train + other.val + other.test) == sorted(from_csv.train + from_csv.val + from_csv.test)


def test_folder_of_train_validation_test(tmp_path):
    rows = sentiment_rows(40)
    write_csv(tmp_path / "d" / "train.csv", rows[:24])
    write_csv(tmp_path / "d" / "validation.csv", rows[24:32])
    write_jsonl(tmp_path / "d" / "test.jsonl", rows[32:])
    data = load_text_data(tmp_path / "d")
    assert data.layout == "splits" and (len(data.train), len(data.val), len(data.test)) == (24, 8, 8)
    assert data.val[0] == (rows[24][0], data.classes.index(rows[24][1]))
    only_train = load_text_data(write_csv(tmp_path / "e" / "train.csv", rows).parent, val_fraction=0.25)
    assert (len(only_train.train), len(only_train.val), len(only_train.test)) == (30, 10, 0)



def test_legacy_encoded_files_read_every_row(tmp_path):
    """A CSV saved by Excel on Windows (cp1252) or as latin-1 is read as such, accents intact, no row skipped; a table too."""
    from headstart.data.base import file_encoding
    from headstart.data.tabular import read_table

    rows = [(f"{t} caf\u00e9 \u201cquoted\u201d", y) for t, y in sentiment_rows(12)]
    path = tmp_path / "excel.csv"
    path.write_bytes(("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows)).encode("cp1252"))
    assert file_encoding(path) == "cp1252"
    data = load_text_data(path, val_fraction=0, test_fraction=0)
    assert not data.skipped and sorted(t for t, _ in data.train) == sorted(t for t, _ in rows)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"text,label\n\x81 odd byte caf\xe9,a\nplain,b\n")  # 0x81: undefined in cp1252
    assert file_encoding(latin) == "latin-1"
    table = tmp_path / "table.csv"
    table.write_bytes("region,sales\n\u00cele-de-France,3\nNord,4\n".encode("cp1252"))
    assert list(read_table(table)["region"]) == ["\u00cele-de-France", "Nord"]


def test_a_csv_with_other_column_names_gets_the_options_that_read_it(tmp_path):
    from headstart.data import resolve_modality

    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "Review", "Stars"])
        writer.writerows([i, text, 5 if label == "positive" else 1] for i, (text, label) in enumerate(sentiment_rows(20)))
    with pytest.raises(UserError) as err:
        resolve_modality(FitConfig(data=str(path)))
    message = str(err.value)
    assert "--text-column Review --label-column Stars" in message, "the text and label columns guessed from the rows"
    assert "--target COLUMN (columns: id, Review, Stars)" in message
    fitted = resolve_modality(FitConfig(data=str(path), text_column="Review", label_column="Stars"))
    assert fitted.name == "text", "the suggested options are the ones that read it"

def test_bad_rows_are_skipped_and_listed(tmp_path):
    path = tmp_path / "bad.csv"
    good = sentiment_rows(10)
    body = "text,label\n" + "".join(f'"{t}",{y}\n' for t, y in good[:5])
    body += ",positive\n"  # row 7: empty text
    body += "   ,negative\n"  # row 8: blank text
    body += "no label here,\n"  # row 9: missing label
    body += "short row\n"  # row 10: missing label column entirely
    # row 11: a corrupt byte in a UTF-8 file (it holds real UTF-8, "na\xc3\xafve"; a file with no UTF-8 at all is
    # read as a legacy encoding: test_legacy_encoded_files_read_every_row)
    path.write_bytes(body.encode() + b"caf\xe9 corrupt beside na\xc3\xafve,positive\n" + "".join(f'"{t}",{y}\n' for t, y in good[5:]).encode())
    data = load_text_data(path)
    assert len(data.train) + len(data.val) + len(data.test) == 10
    reasons = {where.rsplit(" ", 1)[1]: reason for where, reason in data.skipped}
    assert reasons == {"7": "empty text", "8": "empty text", "9": "missing label", "10": "missing label",
                       "11": "undecodable bytes (not UTF-8)"}
    assert all(where.startswith(f"{path} row ") for where, _ in data.skipped)
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"text": "fine", "label": "a"}\n{not json\n{"text": "also fine", "label": "b"}\n\n[1, 2]\n')
    data = load_text_data(lines, val_fraction=0, test_fraction=0)
    assert len(data.train) == 2 and data.skipped == [(f"{lines} row 2", "not a JSON object"), (f"{lines} row 5", "not a JSON object")]


def test_wrong_columns_is_one_error_listing_the_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", sentiment_rows(10), header=("sentence", "sentiment"))
    with pytest.raises(UserError, match=r"no column 'text' or 'label' \(found: sentence, sentiment\)"):
        load_text_data(path)
    data = load_text_data(path, text_column="sentence", label_column="sentiment")
    assert data.classes == ["negative", "positive"]


def test_one_class_and_no_rows_are_clear_errors(tmp_path):
    one = write_csv(tmp_path / "one.csv", [("good", "positive"), ("fine", "positive")] * 4)
    assert load_text_data(one).classes == ["positive"]  # readable (an update's new class); a fit refuses it
    with pytest.raises(UserError, match="only one class .'positive'."):
        hs.fit(str(one), out=str(tmp_path / "run"), progress=False)
    with pytest.raises(UserError, match="no usable rows .1 skipped"):
        load_text_data(write_csv(tmp_path / "none.csv", [("", "positive")]))
    with pytest.raises(UserError, match="no usable rows"):
        load_text_data(write_csv(tmp_path / "empty.csv", []))


def test_unknown_label_in_a_held_out_file_names_the_row(tmp_path):
    write_csv(tmp_path / "d" / "train.csv", sentiment_rows(10))
    write_csv(tmp_path / "d" / "test.csv", [("meh", "neutral")])
    with pytest.raises(UserError, match=r"test.csv row 2: label 'neutral' is not one of the classes \(negative, positive\); "
                                        "add training rows with it"):
        load_text_data(tmp_path / "d")


def test_claims_text_tables_only(tmp_path, sentiment_csv):
    texts = MODALITIES.get("text")
    cfg = FitConfig(data="")
    assert texts.claims(sentiment_csv, cfg)
    assert texts.claims(write_csv(tmp_path / "d" / "train.jsonl", []).parent, cfg) is False  # not JSONL content
    write_jsonl(tmp_path / "j.jsonl", sentiment_rows(4))
    assert texts.claims(tmp_path / "j.jsonl", cfg)
    assert not texts.claims(write_csv(tmp_path / "m.csv", [("a.png", "cat")], header=("path", "label")), cfg)
    assert not texts.claims(write_csv(tmp_path / "p.csv", [("x", "cat", "y")], header=("text", "label", "path")), cfg)
    assert not texts.claims(sentiment_csv, FitConfig(data="", target="label"))  # tabular
    assert texts.claims(write_csv(tmp_path / "s" / "train.csv", sentiment_rows(4)).parent, cfg)
    assert not texts.claims(tmp_path / "s" / "missing", cfg)


def test_collect_inputs_from_literals_and_files(tmp_path, sentiment_csv):
    lines = tmp_path / "more.txt"
    lines.write_text("first line\n\nsecond line\n")
    long = "word " * 40
    xs, names = Texts().collect_inputs(["a great film", str(sentiment_csv), str(lines), long, "missing.csv"], model=None)
    assert xs[0] == "a great film" and xs[1] == sentiment_rows()[0][0] and len(xs) == 1 + 40 + 2 + 2
    assert xs[41:43] == ["first line", "second line"] and xs[-1] == "missing.csv"
    assert names[43] == long.strip()[:77] + "..." and len(names[43]) == 80
    assert Texts().input_key("abc") == Texts().input_key("abc") != Texts().input_key("abd")


# ---------------------------------------------------------------- backbone


def test_minilm_contract(backbone):
    assert backbone.modality == "text" and backbone.feature_dim == 384 and backbone.name == "minilm-l6"
    assert backbone.preprocess.describe() == "256 tokens" and len(backbone.weights_id) == 12
    assert len(backbone.layer_groups()) == 1 + 6
    params = {id(p) for g in backbone.layer_groups() for m in g for p in m.parameters(recurse=False)}
    assert params == {id(p) for p in backbone.parameters()}, "every parameter sits in exactly one layer group"


def test_mean_pooling_ignores_padding(backbone):
    texts = ["short", "a much longer sentence that forces the others in its batch to be padded quite a lot", "mid length text"]
    with torch.no_grad():
        together = backbone.forward_features(backbone.collate(list(backbone.dataset(texts, train=False))))
        for i, text in enumerate(texts):
            alone = backbone.forward_features(backbone.collate(list(backbone.dataset([text], train=False))))
            assert (alone[0] - together[i]).abs().max() < 1e-5
    assert backbone.batch_order(texts) == [1, 2, 0]


def test_sentence_embedding_is_read_from_modules_json(tmp_path, backbone):
    from headstart.backbones.text import sentence_embedding

    assert (backbone.pooling, backbone.normalize) == ("mean", True), "all-MiniLM-L6-v2: mean pooling, then Normalize"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert sentence_embedding(tmp_path) == {"pooling": "cls", "normalize": False, "sentence_model": True}
    assert backbone.sentence_model  # minilm-l6: pre-train warns before continuing it (test_pretrain.py)
    # no modules.json: a plain transformer, mean pooling
    assert sentence_embedding(tmp_path / "elsewhere") == {"pooling": "mean", "normalize": False, "sentence_model": False}


def test_embedding_modes_ignore_padding_and_change_the_cache_key(backbone):
    texts = ["short", "a much longer sentence that pads the other one"]
    batch = backbone.collate(list(backbone.dataset(texts, train=False)))
    with torch.no_grad():
        unit = backbone.forward_features(batch)
        assert torch.allclose(unit.norm(dim=1), torch.ones(2), atol=1e-5)
        key = backbone.cache_key()
        try:
            backbone.pooling, backbone.normalize = "max", False
            pooled = backbone.forward_features(batch)
            alone = backbone.forward_features(backbone.collate(list(backbone.dataset(texts[:1], train=False))))
            assert (pooled[0] - alone[0]).abs().max() < 1e-5 and pooled.norm(dim=1).min() > 1.5
            assert backbone.cache_key() != key
        finally:
            backbone.pooling, backbone.normalize = "mean", True


def test_bundled_embedding_is_what_sentence_transformers_gives(backbone):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers comes with the bench extra (setfit)")
    from headstart.backbones.text import minilm_dir

    texts = ["The cat sits on the mat.", "Stock markets fell sharply on Tuesday after the report."]
    with torch.no_grad():
        ours = backbone.forward_features(backbone.collate(list(backbone.dataset(texts, False)))).numpy()
    theirs = st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts)
    assert np.abs(ours - theirs).max() < 1e-4


def test_bundled_embeddings_are_real(backbone):
    texts = ["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell sharply on Tuesday."]
    with torch.no_grad():
        f = torch.nn.functional.normalize(backbone.forward_features(backbone.collate(list(backbone.dataset(texts, False)))), dim=1)
    assert float(f[0] @ f[1]) > float(f[0] @ f[2]) + 0.3


def test_adapt_chooses_max_length_from_the_texts(backbone):
    from headstart.backbones import create_backbone

    body = create_backbone("minilm-l6")
    data = SimpleNamespace(train=[(t, 0) for t, _ in sentiment_rows(40)])
    chosen = body.adapt(data, FitConfig(data=""))
    assert chosen["max_length"] == 16 and body.preprocess.max_length == 16 and "16 tokens (95th percentile" in chosen["input"]
    assert body.cache_key() != backbone.cache_key(), "max_length is part of the feature-cache key"
    assert body.adapt(data, FitConfig(data="", max_length=1000))["max_length"] == 256


def test_hf_source_failure_is_one_clear_error():
    from headstart.backbones import create_backbone

    with pytest.raises(UserError, match="could not load Hugging Face model 'headstart-no-such/model-xyz'.*--model minilm-l6"):
        create_backbone("hf:headstart-no-such/model-xyz")


# ---------------------------------------------------------------- end to end


def test_two_stage_text_run(text_run):
    files = {p.name for p in text_run.path.iterdir()}
    assert {"config.yaml", "model", "metrics.json", "history.csv", "data.json"} <= files
    assert {"config.json", "tokenizer.json"} <= {p.name for p in (text_run.path / "model" / "backbone").iterdir()}
    metrics = text_run.metrics
    assert set(metrics["stages"]) >= {"features", "head", "finetune"} and metrics["accuracy"] >= 0.8
    resolved = yaml.safe_load((text_run.path / "config.yaml").read_text())
    assert (resolved["lr"], resolved["lr_mult"], resolved["label_smoothing"]) == (5e-5, 2.0, 0.0), "text fine-tuning defaults"
    assert (resolved["pair_batch_size"], resolved["batch_size"]) == (16, 8), "SetFit's pair steps for a transformer, whatever --batch-size"
    assert spec_embedding(text_run) == {"pooling": "mean", "normalize": True}
    spec = json.loads((text_run.path / "model" / "model.json").read_text())
    assert spec["modality"] == "text" and spec["backbone"]["adapter"] == "transformers" and spec["preprocess"]["max_length"] == 16
    rows = text_run.predict(["a great film"])
    assert rows[0]["input"] == "a great film" and rows[0]["predictions"][0]["label"] in ("negative", "positive")


def spec_embedding(run) -> dict:
    backbone = json.loads((run.path / "model" / "model.json").read_text())["backbone"]
    return {"pooling": backbone["pooling"], "normalize": backbone["normalize"]}


def test_reloaded_text_run_predicts_the_same(text_run):
    texts = ["a wonderful, moving story", "dull and tedious", "the plot was fine I guess"]
    again = hs.load(text_run.path)
    assert again.model.backbone.weights_id.startswith("run-")
    assert np.abs(text_run.predict_proba(texts) - again.predict_proba(texts)).max() < 1e-5
    assert [r["predictions"][0]["label"] for r in again.predict(texts[:2])] == ["positive", "negative"]


def test_predicting_a_file_answers_every_row_in_order(text_run, tmp_path):
    rows = [("a wonderful, moving story", "positive"), ("", "negative"), ("dull and tedious", "negative")]
    out = text_run.predict(str(write_csv(tmp_path / "new.csv", rows)))
    assert len(out) == 3  # the empty row keeps its place: predictions line up with the file's rows
    assert out[0]["predictions"][0]["label"] == "positive" and out[2]["predictions"][0]["label"] == "negative"
    assert out[1] == {"input": f"{tmp_path / 'new.csv'} row 3", "error": "empty text"}


def test_a_path_that_is_no_text_file_is_answered_in_place_not_read_as_a_text(text_run, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8 not a text")
    (tmp_path / "folder").mkdir()
    given = [str(tmp_path / "reviewz.csv"), str(tmp_path / "photo.jpg"), str(tmp_path / "folder"), "", "dull and tedious",
             "see https://example.com/a.html", "version 2.0"]
    out = text_run.predict(given)
    assert [r.get("error", "").split(":")[0] for r in out[:4]] == ["no such file", "not a text file", "a folder", "empty text"]
    assert [r["input"] for r in out] == given  # one row per input, in order, named as given
    assert all("predictions" in r for r in out[4:])  # texts with a slash or a dot stay texts
    with pytest.raises(UserError, match=r"none of the 1 input\(s\) could be read .*reviewz.csv: no such file"):
        text_run.predict(str(tmp_path / "reviewz.csv"))


def test_predicting_values_takes_one_text_an_empty_one_and_a_lone_surrogate(text_run):
    one = text_run.predict_values("dull and tedious")
    assert len(one) == 1 and one[0]["input"] == "dull and tedious"  # not a prediction per character
    out = text_run.predict_values(["", "a wonderful\ud800 story"])
    assert out[0] == {"input": "", "error": "empty text"}
    assert out[1]["predictions"][0]["label"] == "positive"  # the tokenizer refused the lone surrogate


def test_predicting_a_file_reads_the_runs_own_text_column(tmp_path):
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(), header=("Review", "Sentiment"))
    run = hs.fit(str(data), strategy="linear-probe", text_column="Review", label_column="Sentiment",
                 out=str(tmp_path / "run"), **FAST)
    new = write_csv(tmp_path / "new.csv", sentiment_rows(6, seed=2), header=("Review", "Sentiment"))
    assert [r["input"] for r in run.predict(str(new))] == [t for t, _ in sentiment_rows(6, seed=2)]


def test_evaluate_on_a_text_file(text_run, tmp_path):
    metrics = text_run.evaluate(str(write_csv(tmp_path / "held.csv", sentiment_rows(20, seed=1))), save=False)
    assert metrics["n"] == 20 and metrics["accuracy"] >= 0.8 and metrics["scored"] == str(tmp_path / "held.csv")
    write_csv(tmp_path / "split" / "train.csv", sentiment_rows(8, seed=3))
    write_csv(tmp_path / "split" / "dev.csv", sentiment_rows(6, seed=4))
    metrics = text_run.evaluate(str(tmp_path / "split"), save=False)  # no test file: the validation file, said so
    assert metrics["n"] == 6 and metrics["scored"] == f"{tmp_path / 'split' / 'dev.csv'} (no test file)"


def test_text_run_body_is_reusable(text_run, sentiment_csv, tmp_path):
    run = hs.fit(str(sentiment_csv), model=f"run:{text_run.path}", strategy="linear-probe", out=str(tmp_path / "reuse"), progress=False)
    config = (run.path / "config.yaml").read_text()
    assert "modality: text" in config and "as trained in" in config
    assert run.model.preprocess.max_length == 16 and run.metrics["accuracy"] >= 0.8


def test_cli_fit_predict_and_cache_reuse(sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(sentiment_csv), "--out", str(out), "--strategy", "linear-probe", "--no-progress"]) == 0
    assert "minilm-l6, input 16 tokens" in capsys.readouterr().out
    assert main(["predict", str(out), "some text", "a great, superb film", "--format", "csv"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.strip().splitlines()))
    assert rows[0] == ["input", "label_1", "probability_1"] and [r[0] for r in rows[1:]] == ["some text", "a great, superb film"]
    assert rows[2][1] == "positive"
    again = hs.fit(str(sentiment_csv), strategy="linear-probe", out=str(tmp_path / "again"), progress=False)
    assert again.metrics["feature_cache"]["computed"] == 0
    assert again.metrics["accuracy"] == pytest.approx(hs.load(out).metrics["accuracy"])


# ---------------------------------------------------------------- real data


@pytest.mark.slow
def test_linear_probe_on_sst2_subset(tmp_path):
    root = needs_shared("sst2")
    with open(root / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    rng = random.Random(0)
    train = [r for label in ("negative", "positive") for r in rng.sample([r for r in rows if r[1] == label], 100)]
    with open(root / "validation.csv", newline="", encoding="utf-8") as f:
        held = list(csv.reader(f))[1:201]
    run = hs.fit(str(write_csv(tmp_path / "train.csv", train)), strategy="linear-probe", out=str(tmp_path / "run"),
                 test_fraction=0.0, progress=False)
    metrics = run.evaluate(str(write_csv(tmp_path / "held.csv", held)), save=False)
    assert metrics["n"] == 200 and metrics["accuracy"] >= 0.65, metrics["accuracy"]


def test_tfidf_baseline_reads_words():
    from headstart.data.text import Texts

    words = {0: ["awful", "boring", "dull"], 1: ["great", "lovely", "superb"]}
    rows = [(f"{words[y][i % 3]} film number {i}", y) for i in range(30) for y in (0, 1)]
    name, accuracy = Texts().classical_baseline(rows[:40], rows[40:], "classification")
    assert name == "TF-IDF + logistic regression" and accuracy == 1.0
    shuffled = [(f"film number {i}", y) for i, (_, y) in enumerate(rows)]  # no word carries the label
    assert Texts().classical_baseline(shuffled[:40], shuffled[40:], "classification")[1] < 0.8
    assert Texts().classical_baseline(rows[:40], rows[40:], "multilabel") is None


def test_rank_and_compare_on_text(sentiment_csv, tmp_path):
    ranked = hs.rank(str(sentiment_csv), "minilm-l6", out=str(tmp_path / "rank"), progress=False)
    assert ranked[0]["model"] == "minilm-l6" and ranked[0]["knn"] > 0.8, ranked
    result = hs.compare(str(sentiment_csv), fractions="1", out=str(tmp_path / "cmp"), **FAST)
    full = result["fractions"]["1"]
    assert full["baseline"]["name"] == "TF-IDF + logistic regression"
    assert full["transfer"]["test"] >= full["scratch"]["test"], "pre-trained MiniLM vs the same body from random init"
    assert (tmp_path / "cmp" / "train-1" / "transfer" / "report.html").is_file()


def test_a_multi_label_text_model_evaluates_label_sets(tmp_path):
    """Labels joined by ';' are read back for evaluate as the sets the model predicts (multi-hot targets)."""
    words = {"good": ["great", "lovely", "superb"], "film": ["film", "movie", "cinema"]}
    rows = []
    for i in range(60):
        tags = [t for t, on in (("good", i % 2 == 0), ("film", i % 3 == 0)) if on] or ["other"]
        text = " ".join([words["good"][i % 3]] * ("good" in tags) + [words["film"][i % 3]] * ("film" in tags) + ["it was", str(i)])
        rows.append((text, ";".join(tags)))
    run = hs.fit(str(write_csv(tmp_path / "tags.csv", rows)), strategy="linear-probe", out=str(tmp_path / "run"), **FAST)
    assert run.model.task.name == "multilabel" and run.classes == ["film", "good", "other"]
    metrics = hs.load(run.path).evaluate(str(tmp_path / "tags.csv"), save=False)
    assert metrics["n"] == 60 and "f1_micro" in metrics and metrics["f1_micro"] > 0.6, metrics
    with pytest.raises(UserError, match="label 'bad' is not one of the labels"):
        run.evaluate(str(write_csv(tmp_path / "bad.csv", [("a text", "good;bad")])), save=False)


def test_text_regression_fits_predicts_and_evaluates_the_label_column_as_numbers(tmp_path):
    """--task regression on a text file: the label column's numbers are the target (as an image manifest's are)."""
    rows = [(text, f"{(8.0 if label == 'positive' else 2.0) + 0.01 * i:.2f}")
            for i, (text, label) in enumerate(sentiment_rows(40))]
    data = write_csv(tmp_path / "scores.csv", rows)
    with pytest.raises(UserError, match="classes have one example.*pass --task regression"):
        hs.fit(str(data), strategy="linear-probe", out=str(tmp_path / "classes"), **FAST)
    run = hs.fit(str(data), task="regression", strategy="linear-probe", out=str(tmp_path / "run"), **FAST)
    assert run.model.task.name == "regression" and run.classes == ["label"] and run.metrics["r2"] > 0.5, run.metrics
    assert run.predict(["a superb film, truly superb from start to finish"])[0]["prediction"] > 5
    metrics = hs.load(run.path).evaluate(str(data), save=False)
    assert metrics["n"] == 40 and metrics["r2"] > 0.5, metrics
    with pytest.raises(UserError, match=r"bad.csv row 2: label 'high' is not a number"):
        run.evaluate(str(write_csv(tmp_path / "bad.csv", [("a text", "high")])), save=False)


def test_semicolon_and_utf16_files_read_like_csv(tmp_path):
    rows = sentiment_rows()
    semicolons = write_csv(tmp_path / "semi.csv", rows, delimiter=";")  # a spreadsheet in a decimal-comma locale
    (tmp_path / "utf16.csv").write_text(write_csv(tmp_path / "plain.csv", rows).read_text(encoding="utf-8"), encoding="utf-16")
    expected = load_text_data(tmp_path / "plain.csv")
    for path in (semicolons, tmp_path / "utf16.csv"):
        data = load_text_data(path)
        assert data.classes == expected.classes and data.train == expected.train and data.test == expected.test
        assert Texts().claims(path, FitConfig(data=str(path)))


def test_a_text_file_without_a_header_says_to_add_one(tmp_path):
    from headstart.data import resolve_modality

    path = tmp_path / "bare.csv"
    path.write_text("".join(f'"{t}",{y}\n' for t, y in sentiment_rows()))
    with pytest.raises(UserError, match="its first row looks like a text, not column names: start the file with a header row text,label"):
        resolve_modality(FitConfig(data=str(path)))


def test_labels_that_differ_only_in_case_are_two_classes_and_a_warning(tmp_path, capsys):
    from headstart.data.base import check_classes

    rows = sentiment_rows() + [("what a lovely, moving film", "Positive")] * 3
    data = check_classes(load_text_data(write_csv(tmp_path / "mixed.csv", rows)), "mixed.csv")
    assert data.classes == ["Positive", "negative", "positive"]
    assert "classes 'Positive', 'positive' differ only in case or spacing" in capsys.readouterr().err
    check_classes(load_text_data(write_csv(tmp_path / "clean.csv", sentiment_rows())), "clean.csv")
    assert "warning" not in capsys.readouterr().err
