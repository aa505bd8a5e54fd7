"""HTTP fuzzing of ``deepfoundry serve`` with schemathesis: every operation of the app's own OpenAPI schema, with
schema-valid (positive) and schema-invalid (negative) requests, in process (``create_app``, its lifespan running).

Every answer must be no 5xx and match the schema: documented status code, content type, body schema and headers,
and schema-invalid requests must be refused. One check is left out, ``positive_data_acceptance``: the body schema
says ``inputs`` is a list of any JSON values, because what one example is depends on the run (shape, columns,
tokenizer, value range: ``GET /v1/model`` states it), so a schema-valid body of wrong examples is a 422 by design.

Bugs this found (regression tests below): ``GET /metrics`` before any prediction was a 500 (the drift PSI of an
empty window of class labels); a body that is not UTF-8 JSON and broken multipart uploads answered an undocumented
400; ``/metrics`` was documented as JSON.
"""
from __future__ import annotations

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


def fuzz(app, examples: int = EXAMPLES) -> tuple[list[str], int]:
    """Every operation of ``app``'s schema, positive and negative: (failure reports, cases sent)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    sent = [0]
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
                sent[0] += 1
                try:
                    case.validate_response(response, checks=CHECKS)
                except BaseException as exc:  # noqa: BLE001 (a schemathesis FailureGroup: collected, reported below)
                    failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:2000])

            check()
    return failures, sent[0]


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
    failures, sent = fuzz(app)
    assert not failures, "\n\n".join(failures[:5])
    assert sent >= 100, sent  # every operation was exercised, not rejected wholesale


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
