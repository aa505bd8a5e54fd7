"""HTTP fuzzing of ``deepfoundry serve`` with schemathesis: every operation of the app's own OpenAPI schema, with
schema-valid (positive) and schema-invalid (negative) requests, in process (``create_app``, its lifespan running).

Every answer must be no 5xx and match the schema: documented status code, content type, body schema and headers,
and schema-invalid requests must be refused. One check is left out, ``positive_data_acceptance``: some
schema-valid examples are 422s by design, for reasons a JSON Schema cannot state (base64 that is no image file,
numbers beyond float32, a text over the run's token limit).

Bugs this found (regression tests below): ``GET /metrics`` before any prediction was a 500 (the drift PSI of an
empty window of class labels); a body that is not UTF-8 JSON and broken multipart uploads answered an undocumented
400; ``/metrics`` was documented as JSON; a JSON integer beyond 64 bits in a tabular column was a 500 (found
by hand while widening the schema; hypothesis rarely draws such integers).

The body schema of ``POST /v1/predict`` is the run's own (``Codec.example_schema``: the nested array of the input
shape, ``{"image": base64}``, the tabular row's columns, a text; 1 to ``max_batch`` examples), so positive cases
reach the model's forward pass, not only the codec's refusals.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, reject, settings  # noqa: E402
from requests.exceptions import InvalidHeader  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient  # noqa: E402

from conftest import FAST  # noqa: E402

from deepfoundry.deploy import create_app  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection]
EXAMPLES = 25  # per operation and generation mode: ~60 cases a second on the tiny models here


def _has_inputs(operation) -> bool:
    """Whether a negative (schema-invalid) request exists for the operation: it takes a body or parameters."""
    return bool(len(operation.body) or len(operation.query) or len(operation.headers) or len(operation.cookies)
                or len(operation.path_parameters))


def fuzz(app, examples: int = EXAMPLES) -> tuple[list[str], dict[str, int]]:
    """Every operation of ``app``'s schema, positive and negative: (failure reports, ``"METHOD path status"``
    -> how many answers)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    answers: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if _has_inputs(operation) else [])
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def check(case) -> None:
                try:
                    response = case.call()
                except InvalidHeader:  # the HTTP client refuses to send a header holding CR/LF: not a request
                    reject()
                key = f"{operation.method.upper()} {operation.path} {response.status_code}"
                answers[key] = answers.get(key, 0) + 1
                try:
                    case.validate_response(response, checks=CHECKS)
                except BaseException as exc:  # noqa: BLE001 (a schemathesis FailureGroup: collected, reported below)
                    failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:2000])

            check()
    return failures, answers


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A real LeNet-5 run on sklearn's digits (1 epoch, no report: 4 s)."""
    import deepfoundry

    return deepfoundry.train("lenet5-digits", overrides={**FAST, "trainer.epochs": 1, "trainer.report": False},
                             out=tmp_path_factory.mktemp("runs") / "digits")


@pytest.fixture(scope="module", params=["digits", "adult", "digits+key"])
def app(request, digits_run):
    """A served image run (sklearn digits), a served tabular run (UCI Adult), and the image run behind an API key
    (the fuzzer sends no key: every ``/v1/*`` answer is the documented 401)."""
    if request.param == "adult":
        return create_app(request.getfixturevalue("adult_run").path)
    return create_app(digits_run.path, api_key="s3cret" if request.param.endswith("key") else None)


def test_fuzz_every_operation(app):
    failures, answers = fuzz(app)
    assert not failures, "\n\n".join(failures[:5])
    assert sum(answers.values()) >= 100, answers  # every operation was exercised, not rejected wholesale
    if app.state.deepfoundry.api_key:
        assert answers.get("POST /v1/predict 401", 0) > 20 and "POST /v1/predict 200" not in answers, answers
    else:  # schema-valid bodies reach the model: answered, not only refused by the codec
        assert answers.get("POST /v1/predict 200", 0) >= 1 and answers.get("POST /v1/predict 422", 0) >= 3, answers


# ---------------------------------------------------------------------------------------------- regressions
def test_metrics_before_any_prediction_is_not_a_500(digits_run):
    """The drift window of class labels is empty before the first prediction: PSI 0, not a crash."""
    with TestClient(create_app(digits_run.path)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert "deepfoundry_drift_score 0.0" in response.text


def test_malformed_bodies_answer_a_documented_400(digits_run):
    with TestClient(create_app(digits_run.path)) as client:
        spec = client.get("/openapi.json").json()["paths"]
        not_json = client.post("/v1/predict", content=b"M\xc2J\xff", headers={"content-type": "application/json"})
        broken = client.post("/v1/predict/file", content=b"--b\r\n1.0--b--\r\n",
                             headers={"content-type": "multipart/form-data; boundary=b"})
    for response in (not_json, broken):
        assert response.status_code == 400 and isinstance(response.json()["detail"], str), response.text
    for path in ("/v1/predict", "/v1/predict/file"):
        assert {"400", "401", "413", "422", "503"} <= set(spec[path]["post"]["responses"]), path
    assert "text/plain" in spec["/metrics"]["get"]["responses"]["200"]["content"]


def test_integers_beyond_64_bits_are_a_422_naming_the_value(digits_run, adult_run):
    """JSON integers have no size limit: 10**40 (beyond float32) and 10**400 (beyond float64) in a tabular column
    were a 500 (numpy's isfinite on a Python int over 64 bits); in an image array, a misleading "ragged" 422."""
    big, huge = "1" + "0" * 40, "1" + "0" * 400
    with TestClient(create_app(adult_run.path)) as client:
        columns = client.get("/v1/model").json()["columns"]
        row = {c["name"]: (1.0 if c["type"] == "number" else c["categories"][0]) for c in columns}
        numeric = next(c["name"] for c in columns if c["type"] == "number")
        categorical = next(c["name"] for c in columns if c["type"] == "category")
        for value in (big, huge):
            body = json.dumps({"inputs": [{**row, numeric: "BIG"}]}).replace('"BIG"', value)
            response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == ["body", "inputs", 0, numeric]
            assert "beyond float32" in response.json()["detail"][0]["msg"]
        body = json.dumps({"inputs": [{**row, categorical: "BIG"}]}).replace('"BIG"', huge)
        response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code in (200, 422), response.text  # an unseen category: answered or refused, never a 500
    with TestClient(create_app(digits_run.path)) as client:
        for value, said in ((big, "is 1e+40 (as float32)"), (huge, "an integer beyond float range")):
            image = [[[0.5] * 8 for _ in range(8)]]
            body = json.dumps({"inputs": [image]}).replace("0.5", value, 1)
            response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 422 and said in response.json()["detail"][0]["msg"], response.text
