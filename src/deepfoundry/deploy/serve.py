"""Serve a run (or an export bundle) over HTTP: FastAPI, micro-batching, Prometheus metrics, drift, a web page.

Endpoints (see docs/serving.md)::

    POST /v1/predict       {"inputs": [example, ...]}  ->  {"predictions": [answer, ...]}
    POST /v1/predict/file  multipart upload (image file, .npy array, CSV of rows, text lines)
    GET  /v1/model         input kind, shape, columns, labels, version
    GET  /healthz /readyz /metrics /openapi.json /  (the web page; these stay open without the API key)

An example is whatever the run's input kind takes as JSON (the codec's ``example_from_json``: a nested
array of the per-example shape, ``{"image": "<base64>"}``, a tabular row ``{column: value}``, a text);
answers are ``deepfoundry predict --json`` rows (the task's ``decode_outputs``). Nothing here asks which
family the run is: the codec and the task answer for it.

**Micro-batching.** Each request's examples join a queue; one worker takes the first waiting request, then
every request that arrives within ``max_wait_ms`` while the batch holds fewer than ``max_batch`` examples,
and runs one ``encode -> forward -> decode`` for all of them in a worker thread (off the event loop).
Under load the forward of one batch overlaps the gathering of the next, so the batch size grows with the
load: requests per second ~ ``batch / forward_time(batch)`` instead of ``1 / forward_time(1)``.
"""

import asyncio
import hashlib
import json
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import BaseModel, Field, create_model

from ..api import load_run
from ..data.codecs import ExampleError, codec_for
from ..errors import DeepfoundryError
from .monitor import DriftWindow, load_reference

BACKENDS = ("torch", "onnx")
OPEN_PATHS = ("/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
MAX_ERRORS = 20  # examples named in one 422 answer


def _require_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise DeepfoundryError(f"serving needs the deploy extra ({exc.name} is missing): "
                               f"pip install 'deepfoundry[deploy]'") from None


# ---------------------------------------------------------------------------------------------- the model
class Model:
    """A run or bundle behind the task contract: checked examples in, JSON-ready answers and drift features out.

    ``backend="torch"`` runs the task's ``predict``; ``"onnx"`` runs the exported graph
    (:class:`deepfoundry.deploy.export.OnnxPredictor`) on the same encoded batch, exporting the bundle
    ``RUN/export/onnx/`` first if it is missing."""

    def __init__(self, path: str | Path, backend: str = "torch") -> None:
        if backend not in BACKENDS:
            raise DeepfoundryError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        path = Path(path)
        if not path.is_dir():
            raise DeepfoundryError(f"'{path}' does not exist (serve takes a run directory or an export bundle)")
        if not (path / "model.json").is_file():
            raise DeepfoundryError(f"'{path}' is neither a run directory nor an export bundle (no model.json)")
        self.path, self.backend = path, backend
        self.run = load_run(path)
        self.task = self.run.task.to("cpu").eval()
        if not self.task.serves():
            raise DeepfoundryError(f"a {self.task.family} run does not answer inputs, so it cannot be served"
                                   f"{self.task.use_instead}")
        self.codec = codec_for(self.run.info)
        self.schema = self.codec.schema()  # refuses input kinds that are not served over HTTP
        self._forward: Callable[[Any], Any] = self.task.predict
        if backend == "onnx":
            self._forward = self._onnx_forward()
        weights = path / "model.safetensors"
        self.version = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.is_file() else "unknown"

    def _onnx_forward(self) -> Callable[[Any], Any]:
        try:
            from .export import OnnxPredictor, export_run
        except ImportError as exc:
            raise DeepfoundryError(f"the onnx backend needs deepfoundry.deploy.export and onnxruntime ({exc}); "
                                   f"pip install 'deepfoundry[deploy]'") from None
        bundle = self.path if (self.path / "model.onnx").is_file() else self.path / "export" / "onnx"
        if not (bundle / "model.onnx").is_file():
            export_run(self.path, fmt="onnx")
        predictor = OnnxPredictor(bundle)
        return lambda batch: torch.as_tensor(np.asarray(predictor.forward(batch)))

    def describe(self, **extra: Any) -> dict[str, Any]:
        from .._version import __version__

        return {**self.schema, "task": self.task.family, "labels": self.task.prediction_labels,
                "name": self.run.config.name, "version": self.version, "backend": self.backend,
                "deepfoundry": __version__, **extra}

    def check(self, inputs: list[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
        """Each JSON example checked by the codec: (examples, 422 error entries naming ``inputs.i``)."""
        examples, errors = [], []
        for i, value in enumerate(inputs):
            try:
                examples.append(self.codec.example_from_json(value))
            except ExampleError as exc:
                if len(errors) < MAX_ERRORS:
                    errors.append(_error(("body", "inputs", i, *exc.field), f"inputs.{i}: {exc}"))
        return examples, errors

    @torch.no_grad()
    def answer(self, examples: list[Any], features: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One ``encode -> forward -> decode`` over checked examples; with ``features``, the drift features too."""
        batch = self.task.encode_inputs(self.codec.batch_from_examples(examples))
        rows = self.task.decode_outputs(self._forward(batch))
        return rows, (self.codec.monitor_features(batch) if features else {})


class PredictRequest(BaseModel):
    """The body of ``POST /v1/predict``."""

    inputs: list[Any] = Field(..., description="examples: nested arrays of the input shape, {\"image\": base64}, "
                                               "tabular rows {column: value} or texts (see GET /v1/model)")


class PredictResponse(BaseModel):
    """The answer of ``POST /v1/predict``: one row per example, as ``deepfoundry predict --json`` prints them
    (``{"class", "label", "probability", "probabilities"}``, ``{"value"}`` or ``{"values"}``)."""

    predictions: list[dict[str, Any]]


class ErrorResponse(BaseModel):
    """A refused request: one line saying what was wrong (401 key, 413 body size, 400 malformed upload, 503 not
    ready). Refused examples answer 422 with FastAPI's ``{"detail": [{"loc", "msg", "type"}]}``."""

    detail: str


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation may give, for its OpenAPI entry (clients and schema fuzzers read them)."""
    said = {400: "malformed request body (bytes that are not JSON text, broken multipart data)", 401: "no or a wrong API key",
            413: "request body over the server's limit (--max-body-mb)",
            503: "the server is starting or shutting down"}
    return {code: {"model": ErrorResponse, "description": said[code]} for code in codes}


def _error(loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


# ---------------------------------------------------------------------------------------------- micro-batching
@dataclass
class _Job:
    examples: list[Any]
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers requests into batches of at most ``max_batch`` examples, waiting at most ``max_wait`` seconds
    after the first, and runs ``work(examples) -> (answers, features)`` for each batch in one worker thread."""

    def __init__(self, work: Callable[[list[Any]], tuple[list[Any], dict[str, Any]]], max_batch: int,
                 max_wait: float, on_batch: Callable[[int, list[Any], dict[str, Any]], None] | None = None) -> None:
        self.work, self.max_batch, self.max_wait, self.on_batch = work, max_batch, max_wait, on_batch
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepfoundry-forward")
        self.task: asyncio.Task | None = None
        self.closing = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, examples: list[Any]) -> list[Any]:
        if self.closing:
            raise RuntimeError("the server is shutting down")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(examples, future))
        return await future

    async def stop(self) -> None:
        """Finish every queued request, then stop the worker."""
        self.closing = True
        await self.queue.put(None)
        if self.task is not None:
            await self.task
        self.executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Job | None = None
        while True:
            first = carry or await self.queue.get()
            carry = None
            if first is None:
                return
            jobs, size, done = [first], len(first.examples), False
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), timeout)
                    except asyncio.TimeoutError:
                        break
                if nxt is None:
                    done = True
                    break
                if size + len(nxt.examples) > self.max_batch:
                    carry = nxt
                    break
                jobs.append(nxt)
                size += len(nxt.examples)
            await self._run(loop, jobs)
            if done:
                while not self.queue.empty():  # requests queued behind the stop sentinel (none are accepted after)
                    job = self.queue.get_nowait()
                    if job is not None:
                        await self._run(loop, [job])
                return

    async def _run(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        examples = [e for job in jobs for e in job.examples]
        try:
            answers, features = await loop.run_in_executor(self.executor, self.work, examples)
        except Exception as exc:  # noqa: BLE001 (handed to the waiting request)
            if len(jobs) > 1:  # one bad request must not fail the others gathered with it
                for job in jobs:
                    await self._run(loop, [job])
            elif not jobs[0].future.done():
                jobs[0].future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(examples), answers, features)
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(answers[start:start + len(job.examples)])
            start += len(job.examples)


# ---------------------------------------------------------------------------------------------- the HTTP layer
class _Limits:
    """Pure ASGI middleware: the API key on ``/v1/*``, the body limit (413), and request metrics by status."""

    def __init__(self, app: Any, state: "_State") -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from fastapi import HTTPException

        state, path = self.state, scope["path"]
        started, status = time.perf_counter(), [500]

        async def counted_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        async def reply(code: int, detail: str, headers: dict[str, str] | None = None) -> None:
            body = json.dumps({"detail": detail}).encode()
            head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
            await counted_send({"type": "http.response.start", "status": code, "headers": head})
            await send({"type": "http.response.body", "body": body})

        try:
            headers = dict(scope.get("headers") or [])
            if state.api_key and path.startswith("/v1/"):
                given = headers.get(b"authorization", b"").decode("latin-1")
                if not secrets.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
                    what = "a wrong API key" if given else "no API key"
                    return await reply(401, f"{what}: send the header 'Authorization: Bearer KEY'",
                                       {"www-authenticate": "Bearer"})
            length = headers.get(b"content-length")
            limit = state.max_body
            if length is not None and length.isdigit() and int(length) > limit:
                return await reply(413, f"request body of {int(length):,} bytes is over the server's limit of "
                                        f"{limit:,} bytes (--max-body-mb)")
            seen = [0]

            async def limited_receive() -> dict[str, Any]:
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > limit:
                        raise HTTPException(413, f"request body is over the server's limit of {limit:,} bytes "
                                                 f"(--max-body-mb)")
                return message

            await self.app(scope, limited_receive, counted_send)
        finally:
            if path.startswith("/v1/"):
                state.metrics.requests.labels(status=str(status[0])).inc()
                if path.startswith("/v1/predict"):
                    state.metrics.latency.observe(time.perf_counter() - started)


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("deepfoundry_requests", "HTTP requests to /v1/*, by status code", ["status"],
                                registry=r)
        self.latency = Histogram("deepfoundry_request_latency_seconds", "latency of predict requests (seconds)",
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10), registry=r)
        self.batch = Histogram("deepfoundry_batch_size", "examples per forward pass",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.examples = Counter("deepfoundry_examples", "examples answered", registry=r)
        self.predictions = Counter("deepfoundry_predictions", "answers by predicted label", ["label"], registry=r)
        self.drift = Gauge("deepfoundry_drift_score", "largest PSI over the drift window (features, predictions)",
                           registry=r)
        self.drift_feature = Gauge("deepfoundry_drift_psi", "PSI of each input feature over the drift window",
                                   ["feature"], registry=r)
        self.drift_examples = Gauge("deepfoundry_drift_examples", "examples in the drift window", registry=r)


@dataclass
class _State:
    model: Model
    metrics: _Metrics
    batcher: MicroBatcher | None
    api_key: str | None
    max_body: int
    max_batch: int
    drift: DriftWindow | None
    log: Any = None
    ready: bool = False


def _web_dir() -> Path:
    return Path(str(resources.files("deepfoundry.deploy") / "web"))


def create_app(path: str | Path, backend: str = "torch", max_batch: int = 32, max_wait_ms: float = 5,
               max_body_mb: float = 8, api_key: str | None = None, log: str | Path | None = None,
               drift_window: int = 500) -> Any:
    """A FastAPI app serving the run or bundle at ``path`` (the model is loaded now; the batching worker
    starts with the app's lifespan).

    >>> import httpx, asyncio
    >>> app = create_app("runs/lenet5-digits")
    >>> # async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c: ...
    """
    _require_extra()
    from fastapi import FastAPI, File, HTTPException, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
    from fastapi.staticfiles import StaticFiles

    for name, value, low in (("max_batch", max_batch, 1), ("max_wait_ms", max_wait_ms, 0),
                             ("drift_window", drift_window, 1)):
        if not value >= low:
            raise DeepfoundryError(f"{name} must be at least {low}, received {value}")
    if not max_body_mb > 0:
        raise DeepfoundryError(f"max_body_mb must be positive, received {max_body_mb}")
    model = Model(path, backend)
    drift = None
    try:
        drift = DriftWindow(load_reference(model.run), drift_window)
    except DeepfoundryError as exc:
        print(f"warning: drift monitoring is off: {exc}", file=sys.stderr)
    state = _State(model, _Metrics(), None, api_key or None, int(max_body_mb * 1024 * 1024), max_batch, drift)
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        state.log = open(log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed at shutdown)

    def on_batch(n: int, answers: list[dict[str, Any]], features: dict[str, Any]) -> None:
        state.metrics.batch.observe(n)
        state.metrics.examples.inc(n)
        for row in answers:
            if "label" in row:
                state.metrics.predictions.labels(label=str(row["label"])).inc()
        if state.drift is not None:
            state.drift.add(features, [model.task.monitored_prediction(r) for r in answers])

    @asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202
        state.batcher = MicroBatcher(lambda ex: model.answer(ex, features=state.drift is not None), max_batch,
                                     max_wait_ms / 1000.0, on_batch)
        state.batcher.start()
        state.ready = True
        try:
            yield
        finally:
            state.ready = False  # SIGTERM: uvicorn stops accepting; queued batches finish here
            await state.batcher.stop()
            if state.log is not None:
                state.log.close()

    app = FastAPI(title="deepfoundry serve", version=model.version, lifespan=lifespan,
                  description=f"{model.run.config.name}: a {model.task.family} model, {model.schema['input_kind']} "
                              f"inputs. See GET /v1/model.")
    app.state.deepfoundry = state

    async def answer(inputs: list[Any], where: tuple[Any, ...]) -> dict[str, Any]:
        if not inputs:
            raise RequestValidationError([_error(where, "inputs: no examples; send at least one")])
        if len(inputs) > max_batch:
            raise RequestValidationError([_error(where, f"inputs: too many examples ({len(inputs)}); the server "
                                                        f"takes at most {max_batch} per request (--max-batch)")])
        examples, errors = model.check(inputs)
        if errors:
            raise RequestValidationError(errors)
        return {"predictions": await submit(examples, where)}

    async def submit(examples: list[Any], where: tuple[Any, ...]) -> list[dict[str, Any]]:
        if state.batcher is None or not state.ready:
            raise HTTPException(503, "the server is not ready (starting or shutting down)")
        try:
            return await state.batcher.submit(examples)
        except DeepfoundryError as exc:  # checked examples the model still refuses (as a batch)
            raise RequestValidationError([_error(where, f"{where[-1]}: {exc}")]) from None
        except RuntimeError as exc:
            raise HTTPException(503, str(exc)) from None

    def record(inputs: list[Any], result: dict[str, Any]) -> None:
        if state.log is not None:
            state.log.write(json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                                        "inputs": inputs, "predictions": result["predictions"]}) + "\n")

    # the body's schema states what this run takes (the codec's example schema) and the batch bounds; the
    # handler enforces both itself, so refusals keep their one-line messages
    Body = create_model("PredictRequest", __base__=PredictRequest, __doc__=PredictRequest.__doc__,
                        inputs=(list[Any], Field(..., description=PredictRequest.model_fields["inputs"].description,
                                                 json_schema_extra={"items": model.codec.example_schema(),
                                                                    "minItems": 1, "maxItems": max_batch})))

    @app.post("/v1/predict", summary="answer examples (JSON)", response_model=PredictResponse,
              responses=_responses(400, 401, 413, 503))
    async def predict(request: Body) -> Response:  # type: ignore[valid-type]
        result = await answer(request.inputs, ("body", "inputs"))
        record(request.inputs, result)
        return JSONResponse(result)  # the rows are JSON-ready already: no second validation pass

    @app.post("/v1/predict/file", summary="answer an uploaded file (image, .npy, CSV of rows, text lines)",
              response_model=PredictResponse, responses=_responses(400, 401, 413, 503))
    async def predict_file(file: UploadFile = File(...)) -> dict[str, Any]:
        data = await file.read()
        name = file.filename or "upload"
        try:
            examples = model.codec.examples_from_file(name, data)
        except ExampleError as exc:
            raise RequestValidationError([_error(("body", "file", *exc.field), f"file: {exc}")]) from None
        if not examples or len(examples) > max_batch:
            raise RequestValidationError([_error(("body", "file"), f"file: {len(examples)} examples; the server takes "
                                                                   f"1 to {max_batch} per request (--max-batch)")])
        result = {"predictions": await submit(examples, ("body", "file"))}
        record([np.asarray(e).tolist() if isinstance(e, np.ndarray) else e for e in examples], result)
        return result

    @app.get("/v1/model", summary="what the model takes and answers", responses=_responses(401))
    async def describe() -> dict[str, Any]:
        return model.describe(max_batch=max_batch, max_body_bytes=state.max_body, auth=bool(state.api_key),
                              drift=state.drift is not None)

    @app.get("/healthz", summary="liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="readiness: the model is loaded and the batching worker runs",
             responses={503: {"description": "not ready: {\"status\": \"not ready\"}"}})
    async def readyz() -> Any:
        if state.ready:
            return {"status": "ready"}
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if state.drift is not None:
            report = state.drift.report()
            state.metrics.drift.set(report["drift_score"])
            state.metrics.drift_examples.set(report["examples"])
            for name, row in report["features"].items():
                state.metrics.drift_feature.labels(feature=name).set(row["psi"])
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    web = _web_dir()

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        return FileResponse(web / "index.html", media_type="text/html")

    app.mount("/web", StaticFiles(directory=web), name="web")
    app.add_middleware(_Limits, state=state)
    return app


# ---------------------------------------------------------------------------------------------- the serve verb
def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8000, backend: str = "torch", max_batch: int = 32,
          max_wait_ms: float = 5, max_body_mb: float = 8, api_key_env: str | None = None, log: str | Path | None = None,
          drift_window: int = 500, ready: Callable[[str], None] | None = None) -> None:
    """``deepfoundry serve``: check everything (key variable, backend, folder, port) before serving; SIGTERM and
    Ctrl-C stop accepting, finish the queued batches and return (exit 0)."""
    import os
    import signal
    import socket

    _require_extra()
    import uvicorn

    if backend not in BACKENDS:
        raise DeepfoundryError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise DeepfoundryError(f"--api-key-env names the environment variable {api_key_env!r}, which is not set "
                                   f"(or empty); export {api_key_env}=<key> first")
    app = create_app(path, backend, max_batch, max_wait_ms, max_body_mb, api_key, log, drift_window)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does; a listening port still refuses
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DeepfoundryError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (port in use? pick another "
                               f"with --port)") from None

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)  # a SIGTERM is the normal way to stop a server: exit 0

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=30))
    where = f"http://{host}:{sock.getsockname()[1]}"
    print(f"serving {path} ({backend}) at {where}  (web page {where}/, docs {where}/docs)", flush=True)
    if ready is not None:
        ready(where)
    server.run(sockets=[sock])
