"""``deepfoundry serve`` / ``create_app``: answers, bad inputs (each a 4xx naming the problem, the server keeps
serving), the API key, the body limit, metrics, micro-batching, the request log, SIGTERM and the CLI errors.

The app is driven through httpx's ASGI transport with its lifespan running (the batching worker); the
SIGTERM and CLI tests start the real command."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import FAST, require_shared_dataset  # noqa: E402

from deepfoundry.deploy import create_app  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


@asynccontextmanager
async def client(app):
    """An httpx client talking to ``app`` in process, with the app's lifespan (the batching worker) running."""
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            yield c


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def digits(digits_run):
    return digits_run


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    import deepfoundry

    return deepfoundry.train("gru-sentiment", overrides={**FAST, "trainer.epochs": 1, "trainer.report": False},
                             out=tmp_path_factory.mktemp("runs") / "text")


def adult_rows(n, start=0):
    """Raw Adult rows as JSON objects (missing values null), without the target."""
    from deepfoundry.data.tabular import read_adult

    frame = read_adult(require_shared_dataset("adult") / "adult.data").iloc[start:start + n].drop(columns="income")
    return json.loads(frame.to_json(orient="records"))


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 1, 8, 8)).tolist()


def assert_names(response, status, *words):
    assert response.status_code == status, response.text
    text = json.dumps(response.json())
    for word in words:
        assert word in text, (word, text)


def test_predict_matches_run_predict_rows(digits):
    app = create_app(digits.path)
    x = np.array(images(5))

    async def go():
        async with client(app) as c:
            return await c.post("/v1/predict", json={"inputs": x.tolist()})

    r = run(go())
    assert r.status_code == 200
    expected = digits.predict_rows(x.astype(np.float32))
    got = r.json()["predictions"]
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    for g, e in zip(got, expected):
        assert abs(g["probability"] - e["probability"]) < 1e-6
        assert set(g["probabilities"]) == set(e["probabilities"])


def test_bad_inputs_are_4xx_naming_the_problem_and_the_server_keeps_serving(digits):
    app = create_app(digits.path, max_batch=8, max_body_mb=0.05)
    good = {"inputs": images(1)}

    async def go():
        async with client(app) as c:
            out = {}
            out["malformed"] = await c.post("/v1/predict", content=b'{"inputs": [[1, 2', headers={
                "content-type": "application/json"})
            out["no_inputs"] = await c.post("/v1/predict", json={"examples": images(1)})
            out["shape"] = await c.post("/v1/predict", json={"inputs": [images(1)[0], np.zeros((8, 8)).tolist()]})
            out["ragged"] = await c.post("/v1/predict", json={"inputs": [[[[1, 2], [3]]]]})
            out["dtype"] = await c.post("/v1/predict", json={"inputs": [np.full((1, 8, 8), "a").tolist()]})
            out["bool"] = await c.post("/v1/predict", json={"inputs": [np.full((1, 8, 8), True).tolist()]})
            nan = np.zeros((1, 8, 8)).tolist()
            nan[0][3][4] = float("nan")
            out["nan"] = await c.post("/v1/predict", content=json.dumps({"inputs": [nan]}).encode(),
                                      headers={"content-type": "application/json"})
            inf = np.zeros((1, 8, 8)).tolist()
            inf[0][0][0] = 1e39  # finite in JSON, infinite as float32
            out["inf"] = await c.post("/v1/predict", json={"inputs": [inf]})
            out["too_many"] = await c.post("/v1/predict", json={"inputs": images(9)})
            out["empty"] = await c.post("/v1/predict", json={"inputs": []})
            out["too_large"] = await c.post("/v1/predict", json={"inputs": images(8) * 12})
            out["base64"] = await c.post("/v1/predict", json={"inputs": [{"image": "not base64!"}]})
            out["not_an_image"] = await c.post("/v1/predict", json={"inputs": [{"image": base64.b64encode(
                b"hello").decode()}]})
            out["after"] = await c.post("/v1/predict", json=good)
            return out

    out = run(go())
    assert_names(out["malformed"], 422, "JSON decode error")
    assert_names(out["no_inputs"], 422, "inputs", "missing")
    assert_names(out["shape"], 422, "inputs.1", "shape", "(1, 8, 8)", "(8, 8)")
    assert out["shape"].json()["detail"][0]["loc"] == ["body", "inputs", 1]
    assert_names(out["ragged"], 422, "inputs.0", "ragged")
    assert_names(out["dtype"], 422, "inputs.0", "dtype", "strings")
    assert_names(out["bool"], 422, "inputs.0", "dtype", "booleans")
    assert_names(out["nan"], 422, "inputs.0", "NaN/inf", "[0, 3, 4]")
    assert_names(out["inf"], 422, "inputs.0", "NaN/inf")
    assert_names(out["too_many"], 422, "too many examples", "9", "--max-batch")
    assert_names(out["empty"], 422, "no examples")
    assert_names(out["too_large"], 413, "limit", "--max-body-mb")
    assert_names(out["base64"], 422, "inputs.0", "base64")
    assert_names(out["not_an_image"], 422, "inputs.0", "cannot read image")
    assert out["after"].status_code == 200 and len(out["after"].json()["predictions"]) == 1


def test_body_limit_without_content_length(digits):
    app = create_app(digits.path, max_body_mb=0.01)

    async def chunks():
        body = json.dumps({"inputs": images(8)}).encode()
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    async def go():
        async with client(app) as c:
            return await c.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})

    assert_names(run(go()), 413, "limit")


def test_api_key(digits):
    app = create_app(digits.path, api_key="s3cret")

    async def go():
        async with client(app) as c:
            out = {"none": await c.post("/v1/predict", json={"inputs": images(1)}),
                   "wrong": await c.post("/v1/predict", json={"inputs": images(1)},
                                         headers={"Authorization": "Bearer nope"}),
                   "model": await c.get("/v1/model"),
                   "right": await c.post("/v1/predict", json={"inputs": images(1)},
                                         headers={"Authorization": "Bearer s3cret"})}
            for path in ("/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/web/app.js"):
                out[path] = await c.get(path)
            return out

    out = run(go())
    assert_names(out["none"], 401, "no API key", "Authorization: Bearer")
    assert out["none"].headers["www-authenticate"] == "Bearer"
    assert_names(out["wrong"], 401, "wrong API key")
    assert out["model"].status_code == 401
    assert out["right"].status_code == 200
    for path in ("/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/web/app.js"):
        assert out[path].status_code == 200, path
    assert "<canvas" in out["/"].text
    assert "/v1/predict" in out["/openapi.json"].json()["paths"]


def test_model_metrics_and_micro_batching(digits, tmp_path):
    log = tmp_path / "requests.jsonl"
    app = create_app(digits.path, max_batch=16, max_wait_ms=50, log=log)

    async def go():
        async with client(app) as c:
            model = (await c.get("/v1/model")).json()
            answers = await asyncio.gather(*[c.post("/v1/predict", json={"inputs": images(1, seed=i)})
                                             for i in range(40)])
            await c.post("/v1/predict", json={"inputs": [[0]]})  # one 422
            metrics = (await c.get("/metrics")).text
            return model, answers, metrics

    model, answers, metrics = run(go())
    assert model["input_kind"] == "image" and model["input_shape"] == [1, 8, 8]
    assert model["labels"] == [str(k) for k in range(10)] and model["version"] and model["backend"] == "torch"
    assert all(a.status_code == 200 for a in answers)
    values = {}
    for line in metrics.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['deepfoundry_requests_total{status="200"}'] == 41  # 40 predictions and GET /v1/model
    assert values['deepfoundry_requests_total{status="422"}'] == 1
    assert values["deepfoundry_request_latency_seconds_count"] == 41
    batches, examples = values["deepfoundry_batch_size_count"], values["deepfoundry_batch_size_sum"]
    assert examples == 40 and batches < 40, (batches, examples)  # requests were gathered into batches
    assert sum(v for k, v in values.items() if k.startswith("deepfoundry_predictions_total{")) == 40
    assert "deepfoundry_drift_score" in values and values["deepfoundry_drift_examples"] == 40
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 40 and {"time", "inputs", "predictions"} <= set(lines[0])
    assert len(lines[0]["inputs"]) == 1 and lines[0]["predictions"][0]["label"] in model["labels"]


def test_upload_image_file_and_npy(digits):
    from PIL import Image

    app = create_app(digits.path)
    png = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(png, format="PNG")
    npy = io.BytesIO()
    np.save(npy, np.random.default_rng(1).random((3, 1, 8, 8)).astype(np.float32))

    async def go():
        async with client(app) as c:
            return (await c.post("/v1/predict/file", files={"file": ("digit.png", png.getvalue(), "image/png")}),
                    await c.post("/v1/predict/file", files={"file": ("x.npy", npy.getvalue())}),
                    await c.post("/v1/predict/file", files={"file": ("x.txt", b"hello")}),
                    await c.post("/v1/predict", json={"inputs": [{"image": base64.b64encode(png.getvalue())
                                                                  .decode()}]}))

    png_r, npy_r, txt_r, b64_r = run(go())
    assert png_r.status_code == 200 and len(png_r.json()["predictions"]) == 1
    assert npy_r.status_code == 200 and len(npy_r.json()["predictions"]) == 3
    assert_names(txt_r, 422, "file", "image")
    assert b64_r.json()["predictions"] == png_r.json()["predictions"]


def test_tabular_rows(adult_run):
    rows = adult_rows(3)
    app = create_app(adult_run.path)

    async def go():
        async with client(app) as c:
            return ((await c.get("/v1/model")).json(), await c.post("/v1/predict", json={"inputs": rows}),
                    await c.post("/v1/predict", json={"inputs": [{**rows[0], "colour": "red"}]}),
                    await c.post("/v1/predict", json={"inputs": [{**rows[0], "age": "old"}]}),
                    await c.post("/v1/predict", json={"inputs": [{k: v for k, v in rows[0].items() if k != "sex"}]}),
                    await c.post("/v1/predict", json={"inputs": [{**rows[0], "age": None}]}))

    model, good, unknown, dtype, missing, null = run(go())
    assert [c["name"] for c in model["columns"]][:1] == ["age"] and model["input_kind"] == "tabular"
    assert good.status_code == 200
    assert [r["label"] for r in good.json()["predictions"]] == [r["label"] for r in adult_run.predict_rows(rows)]
    assert_names(unknown, 422, "inputs.0", "unknown column", "colour")
    assert unknown.json()["detail"][0]["loc"] == ["body", "inputs", 0, "colour"]
    assert_names(dtype, 422, "inputs.0", "dtype", "age")
    assert_names(missing, 422, "inputs.0", "missing column", "sex")
    assert null.status_code == 200  # null: a missing value, imputed as in training


def test_texts(text_run):
    app = create_app(text_run.path)

    async def go():
        async with client(app) as c:
            return (await c.post("/v1/predict", json={"inputs": ["a great film", "terrible and boring"]}),
                    await c.post("/v1/predict", json={"inputs": [42]}),
                    await c.post("/v1/predict", json={"inputs": ["good " * 500]}))

    good, dtype, long = run(go())
    assert [r["label"] for r in good.json()["predictions"]] == \
        [r["label"] for r in text_run.predict_rows(["a great film", "terrible and boring"])]
    assert_names(dtype, 422, "inputs.0", "dtype", "string")
    assert_names(long, 422, "inputs.0", "tokens", "maximum")


def test_create_app_refuses_what_it_cannot_serve(tmp_path, digits):
    from deepfoundry.errors import DeepfoundryError

    with pytest.raises(DeepfoundryError, match="neither a run directory nor an export bundle"):
        create_app(tmp_path)
    with pytest.raises(DeepfoundryError, match="unknown backend"):
        create_app(digits.path, backend="tensorflow")
    with pytest.raises(DeepfoundryError, match="max_batch"):
        create_app(digits.path, max_batch=0)


# ---------------------------------------------------------------------------------------------- the command
def _env():
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _one_error(capsys, args, *words):
    """``deepfoundry ARGS`` in process: exit 2 with one ``error:`` line holding ``words``."""
    from deepfoundry.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_cli_errors(digits, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DF_TEST_UNSET_KEY", raising=False)
    _one_error(capsys, ["serve", digits.path, "--api-key-env", "DF_TEST_UNSET_KEY"], "DF_TEST_UNSET_KEY", "not set")
    _one_error(capsys, ["serve", tmp_path], "neither a run directory nor an export bundle")
    _one_error(capsys, ["serve", tmp_path / "nope"], "does not exist")
    _one_error(capsys, ["serve", digits.path, "--backend", "tensorflow"], "unknown backend", "torch, onnx")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        _one_error(capsys, ["serve", digits.path, "--port", busy.getsockname()[1]], "cannot listen", "in use")


def test_sigterm_finishes_queued_requests_and_exits_0(digits):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "deepfoundry", "serve", str(digits.path), "--port", str(port),
                             "--max-wait-ms", "1500"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        statuses: list[int] = []
        clients = [threading.Thread(target=lambda i=i: statuses.append(httpx.post(
            url + "/v1/predict", json={"inputs": images(2, seed=i)}, timeout=30).status_code)) for i in range(4)]
        for t in clients:
            t.start()
        time.sleep(0.7)  # the requests wait in the batch (max-wait 1.5 s) when SIGTERM arrives
        proc.send_signal(signal.SIGTERM)
        for t in clients:
            t.join()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert statuses == [200] * 4
    assert proc.returncode == 0, err


def test_onnx_backend_and_bundles(digits):
    """``--backend onnx`` exports ``RUN/export/onnx`` when missing and answers as the torch backend does (the
    graph's parity bound, 1e-4); the bundle itself serves too."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("deepfoundry.deploy.export")
    x = images(6, seed=3)

    async def go(app):
        async with client(app) as c:
            return (await c.post("/v1/predict", json={"inputs": x})).json()["predictions"], \
                (await c.get("/v1/model")).json()

    torch_rows, _ = run(go(create_app(digits.path)))
    onnx_rows, model = run(go(create_app(digits.path, backend="onnx")))
    assert model["backend"] == "onnx" and (digits.path / "export" / "onnx" / "model.onnx").is_file()
    bundle_rows, _ = run(go(create_app(digits.path / "export" / "onnx")))
    for rows in (onnx_rows, bundle_rows):
        assert [r["label"] for r in rows] == [r["label"] for r in torch_rows]
        for r, t in zip(rows, torch_rows):
            assert max(abs(r["probabilities"][k] - t["probabilities"][k]) for k in t["probabilities"]) < 1e-4
