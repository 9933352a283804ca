"""`headstart serve`: the FastAPI app answers what `predict` answers, for every modality, and refuses bad input clearly."""
import io
from pathlib import Path

import pandas as pd
import pytest

import headstart as hs
from headstart.cli import build_parser
from headstart.errors import UserError

pytest.importorskip("fastapi", reason="the serve extra (pip install 'headstart[serve]') is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from headstart.deploy.serve import create_app  # noqa: E402
from test_tabular import FAST as TABLE_FAST, make_table  # noqa: E402
from test_text import sentiment_rows, write_csv  # noqa: E402


@pytest.fixture(scope="module")
def text_client(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_text")
    data = write_csv(root / "reviews.csv", sentiment_rows())
    run = hs.fit(str(data), strategy="linear-probe", out=str(root / "run"), cache_dir=str(root / "cache"), progress=False)
    return run, TestClient(create_app(run.path))


@pytest.fixture(scope="module")
def table_client(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_table")
    data = make_table(root / "t.csv", n=120)
    pd.read_csv(data).drop(columns=["label"]).to_csv(data, index=False)
    run = hs.fit(str(data), target="y", strategy="finetune", out=str(root / "run"), cache_dir=str(root / "cache"),
                 **{**TABLE_FAST, "epochs": 3})
    return run, data, TestClient(create_app(run))


def test_texts_as_json_get_the_predictions_of_run_predict(text_client):
    run, client = text_client
    texts = ["the plot was wonderful, truly wonderful", "the acting was dreadful, truly dreadful"]
    answer = client.post("/predict", json={"inputs": texts, "top_k": 2})
    assert answer.status_code == 200
    assert answer.json()["predictions"] == run.predict(texts, top_k=2)
    assert [r["predictions"][0]["label"] for r in answer.json()["predictions"]] == ["positive", "negative"]


def test_a_text_that_names_a_server_file_is_read_as_text(text_client, tmp_path):
    """A client's string is never opened on the server: predict() would read this CSV's rows, serve reads the words."""
    run, client = text_client
    secret = write_csv(tmp_path / "secret.csv", sentiment_rows(6, seed=3))
    rows = client.post("/predict", json={"inputs": [str(secret)]}).json()["predictions"]
    assert len(run.predict([str(secret)])) == 6
    assert [r["input"] for r in rows] == [str(secret)]


def test_info_and_health_describe_the_served_model(text_client):
    run, client = text_client
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert (info["modality"], info["task"], info["classes"]) == ("text", "classification", ["negative", "positive"])
    assert info["metrics"]["accuracy"] == run.metrics["accuracy"]


def test_bad_requests_get_a_reason(text_client):
    run, client = text_client
    wrong_type = client.post("/predict", json={"inputs": [{"text": "a row, not a string"}]})
    assert wrong_type.status_code == 400 and "not a text" in wrong_type.json()["detail"]
    assert client.post("/predict", json={"inputs": []}).status_code == 400
    assert client.post("/predict", json={"texts": ["no inputs field"]}).status_code == 422
    small = TestClient(create_app(run, max_inputs=2))
    too_many = small.post("/predict", json={"inputs": ["a", "b", "c"]})
    assert too_many.status_code == 413 and "at most 2" in too_many.json()["detail"]


def test_table_rows_as_json_and_a_csv_upload_agree_with_predict(table_client):
    run, data, client = table_client
    rows = pd.read_csv(data).drop(columns=["y"]).head(5)
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
    as_json = client.post("/predict", json={"inputs": records}).json()["predictions"]
    expected = [r["prediction"] for r in run.predict_values(records)]
    assert [r["prediction"] for r in as_json] == pytest.approx(expected)
    assert [r["input"] for r in as_json] == [f"row {i}" for i in range(1, 6)]

    upload = io.BytesIO(rows.to_csv(index=False).encode())
    as_file = client.post("/predict/files", files=[("files", ("new_rows.csv", upload, "text/csv"))]).json()["predictions"]
    assert [r["prediction"] for r in as_file] == pytest.approx(expected, abs=1e-5)
    assert [r["input"] for r in as_file] == [f"new_rows.csv:row {i}" for i in range(2, 7)]  # the header is row 1


def test_a_row_without_a_trained_column_names_it(table_client):
    _, _, client = table_client
    answer = client.post("/predict", json={"inputs": [{"a": 1.0, "b": 0.5}]})
    assert answer.status_code == 400 and "lack column(s)" in answer.json()["detail"] and "c" in answer.json()["detail"]


def test_images_upload_and_an_unreadable_one_is_answered_in_place(tiny_run):
    run, data = tiny_run
    client = TestClient(create_app(run))
    image = next(Path(data, "red").iterdir())
    files = [("files", ("mine.png", image.read_bytes(), "image/png")),
             ("files", ("broken.jpg", b"not an image", "image/jpeg"))]
    rows = client.post("/predict/files", files=files, params={"top_k": 2}).json()["predictions"]
    assert [r["input"] for r in rows] == ["mine.png", "broken.jpg"]
    assert rows[0]["predictions"] == run.predict([str(image)], top_k=2)[0]["predictions"]
    assert "error" in rows[1] and "predictions" not in rows[1]
    as_json = client.post("/predict", json={"inputs": ["red.png"]})
    assert as_json.status_code == 400 and "/predict/files" in as_json.json()["detail"]


def test_onnx_engine_without_an_export_fails_at_start(tiny_run):
    run, _ = tiny_run
    if (run.path / "export").exists():
        pytest.skip("another test exported this run")
    with pytest.raises(UserError, match="export"):
        create_app(run.path, engine="onnx")


def test_cli_and_api_share_the_name_and_options():
    args = build_parser().parse_args(["serve", "runs/x", "--port", "9000", "--engine", "onnx"])
    assert (args.run, args.port, args.engine, args.host) == ("runs/x", 9000, "onnx", "127.0.0.1")
    assert callable(hs.serve)
