"""`headstart serve`: the FastAPI app answers what `predict` answers, for every modality, and refuses bad input clearly."""
import io
import socket
from pathlib import Path

import pandas as pd
import pytest

import headstart as hs
from headstart.cli import build_parser
from headstart.errors import UserError

pytest.importorskip("fastapi", reason="the serve extra (pip install 'headstart[serve]') is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from headstart.deploy.serve import create_app, serve  # noqa: E402
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
    small = TestClient(create_app(run, max_inputs=2))
    too_many = small.post("/predict", json={"inputs": ["a", "b", "c"]})
    assert too_many.status_code == 413 and "at most 2" in too_many.json()["detail"]


def test_malformed_requests_answer_400_with_one_line_not_pydantics_list(text_client):
    _, client = text_client
    as_json = "application/json"
    expected = {  # (body, content-type) -> the start of the one line
        ('{"inputs": "a fine film"}', as_json): "body.inputs: must be a list of texts or table rows",
        ('["a fine film"]', as_json): "body: must be a JSON object",
        ('{"texts": ["a fine film"]}', as_json): "body.inputs: missing; send a list",
        ('{"inputs": ["a fine film"], "top_k": "x"}', as_json): "body.top_k: must be a whole number",
        ('{"inputs": [}', as_json): "body: not valid JSON (",
        ('{"inputs": ["a fine film"]}', "text/plain"): "body: must be a JSON object",
    }
    for (body, kind), start in expected.items():
        answer = client.post("/predict", content=body.encode(), headers={"content-type": kind})
        detail = answer.json()["detail"]
        assert answer.status_code == 400 and isinstance(detail, str) and "\n" not in detail, (body, answer.text)
        assert detail.startswith(start), (body, detail)
    no_files = client.post("/predict/files", params={"top_k": 1})
    assert no_files.status_code == 400 and 'named "files"' in no_files.json()["detail"]


def test_top_k_below_one_is_refused_not_read_as_one(text_client):
    _, client = text_client
    upload = [("files", ("a.txt", b"a fine film\n", "text/plain"))]
    answers = [client.post("/predict", json={"inputs": ["a fine film"], "top_k": 0}),
               client.post("/predict/files", files=upload, params={"top_k": -3})]
    for answer in answers:
        assert answer.status_code == 400 and answer.json()["detail"].startswith("top_k must be at least 1")
    assert client.post("/predict/files", files=upload, params={"top_k": 2}).status_code == 200


def test_upload_errors_name_the_upload_not_the_servers_temporary_path(text_client):
    _, client = text_client
    rows = b'text\nthe plot was wonderful\n""\nthe acting was dreadful\n'
    answer = client.post("/predict/files", files=[("files", ("mine.csv", rows, "text/csv"))])
    assert "headstart-serve" not in answer.text
    assert answer.json()["predictions"][1] == {"input": "mine.csv row 3", "error": "empty text"}
    other_column = b"review,label\ngood,positive\n"
    no_column = client.post("/predict/files", files=[("files", ("reviews.csv", other_column, "text/csv"))])
    assert no_column.status_code == 400 and no_column.json()["detail"].startswith("reviews.csv: no column 'text'")
    assert "headstart-serve" not in no_column.text


def test_max_inputs_counts_the_rows_of_uploaded_files(text_client):
    run, _ = text_client
    small = TestClient(create_app(run, max_inputs=2))
    three = b"text\ngood\nbad\nfine\n"  # one file, three inputs
    too_many = small.post("/predict/files", files=[("files", ("rows.csv", three, "text/csv"))])
    assert too_many.status_code == 413 and too_many.json()["detail"].startswith("3 inputs in one request")
    two = small.post("/predict/files", files=[("files", ("rows.csv", b"text\ngood\nbad\n", "text/csv"))])
    assert two.status_code == 200 and [r["input"] for r in two.json()["predictions"]] == ["good", "bad"]


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


def test_info_of_a_regression_names_its_target_and_the_columns_to_send(table_client):
    _, _, client = table_client
    info = client.get("/info").json()
    assert info["task"] == "regression" and info["target"] == "y" and "classes" not in info
    assert "classes" not in info["summary"] and info["summary"].endswith("predicting y")
    assert [c["name"] for c in info["columns"]] == ["a", "b", "c", "d"]
    assert {c["name"]: c["type"] for c in info["columns"]}["c"] == "categorical"


def test_cells_read_as_missing_or_clipped_are_warned_in_the_answer(table_client):
    """The client never sees the server's log: what headstart warns of its rows comes back beside the predictions."""
    _, _, client = table_client
    rows = [{"a": "1.5 cm", "b": 1e308, "c": "x", "d": 2}, {"a": 0.1, "b": 0.5, "c": "y", "d": 1}]
    answer = client.post("/predict", json={"inputs": rows}).json()
    assert len(answer["predictions"]) == 2 and len(answer["warnings"]) == 2
    assert "row 1 column a: '1.5 cm' is not a number" in answer["warnings"][0]
    assert "row 1 column b: 1e+308 is far outside" in answer["warnings"][1]
    upload = pd.DataFrame(rows).to_csv(index=False).encode()
    warned = client.post("/predict/files", files=[("files", ("mine.csv", upload, "text/csv"))]).json()["warnings"]
    assert "mine.csv:row 2 column a" in warned[0] and "headstart-serve" not in " ".join(warned)
    assert "warnings" not in client.post("/predict", json={"inputs": rows[1:]}).json()


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
    assert "broken.jpg" in rows[1]["error"] and "headstart-serve" not in rows[1]["error"]
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


def test_a_busy_port_is_one_line_before_anything_is_served(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is in use: pass --port N"):
            serve("no/run/needed", port=port)  # the port is checked before the run is loaded
    assert "serving" not in capsys.readouterr().out


def test_cli_and_api_share_the_name_and_options():
    args = build_parser().parse_args(["serve", "runs/x", "--port", "9000", "--engine", "onnx"])
    assert (args.run, args.port, args.engine, args.host) == ("runs/x", 9000, "onnx", "127.0.0.1")
    assert callable(hs.serve)
