"""`edge-ner serve`: an artifact behind a small HTTP API, with concurrent requests
coalesced into shared model calls (Triton's dynamic batching, for one model on a small box).

    edge-ner serve runs/conll2003/quantized/L3-ort-int8-dynamic --port 8080
    curl -s localhost:8080/v1/entities -d '{"text": "Angela Merkel visited Paris."}'

Starlette on uvicorn: both pure Python, a few MB on top of the lean runtime, and the
ASGI stack FastAPI itself runs on, without pydantic (the request schema is two fields, and
the OpenAPI document is written out below).

Requests wait in one bounded queue. A collector takes everything that arrived within
`max_wait_ms` of the oldest waiting request (less, once the queued texts would fill a
model call or no other request is being read, so a lone request never waits) and runs it
as one `predict_batch` in the model's own thread, off the event loop; each request gets
back only its own texts' entities. That is safe only where the
artifact's manifest records it batch-invariant (a text's entities the same whatever it is
batched with); otherwise each request keeps model calls of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgener.predictor import Predictor

log = logging.getLogger("edgener.serve")
# English text runs about four characters a subword token: enough to tell when the queued
# texts would fill a model call, so the collector stops waiting for more.
CHARS_PER_TOKEN = 4


@dataclass
class ServeConfig:
    threads: int | None = None  # ONNX Runtime's threads for the model; None: all cores
    max_batch_tokens: int = 512  # padded tokens per model call (the runtime's budget)
    max_wait_ms: float = 5.0  # how long a request may wait for others; 0: no coalescing
    max_queue: int = 256  # requests waiting for the model; more are refused (503)
    max_text_chars: int = 100_000  # one text; longer ones are refused (413)
    max_texts: int = 256  # texts in one request
    max_body_bytes: int = 1_000_000
    timeout_s: float = 30.0  # a request not answered by then gets 504
    # ONNX Runtime's worker threads spin between operators by default: fastest on idle
    # cores, but here they share the cores with the event loop that parses the requests.
    spinning: bool = False
    warmup_texts: tuple[str, ...] = ("EU rejects German call to boycott British lamb .",) * 4


class ApiError(Exception):
    """An error answered as JSON: {"error": message}, with this status."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Job:
    texts: list[str]
    future: asyncio.Future
    arrived: float  # the event loop's clock


class Metrics:
    """The Prometheus series of one server (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("edge_ner_requests", "HTTP requests by path and status",
                                ["path", "status"], registry=self.registry)
        self.request_seconds = Histogram(
            "edge_ner_request_seconds", "Time from a request's arrival to its answer",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=self.registry)
        self.model_seconds = Histogram(
            "edge_ner_model_call_seconds", "Time of one coalesced model call",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 5),
            registry=self.registry)
        self.batch_requests = Histogram(
            "edge_ner_batch_requests", "Requests served by one model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.batch_texts = Histogram("edge_ner_batch_texts", "Texts in one model call",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                                     registry=self.registry)
        self.queue_depth = Gauge("edge_ner_queue_depth", "Requests waiting for the model",
                                 registry=self.registry)


class Batcher:
    """The bounded queue in front of the model and the collector that empties it."""

    def __init__(self, predictor: Predictor, config: ServeConfig, metrics: Metrics):
        self.predictor, self.config, self.metrics = predictor, config, metrics
        self.mix = predictor.batch_invariant
        self.queue: deque[Job] = deque()
        self.arrival = asyncio.Event()
        # Requests being read and parsed, not yet queued: the ones worth waiting for.
        self.incoming = 0
        # One model thread: ONNX Runtime parallelises inside a call; two calls at once
        # would only fight over the same cores.
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.collect())

    async def stop(self) -> None:
        """Stop collecting (the server has already answered every request in flight)."""
        if self.task is not None:
            self.task.cancel()
        self.model_thread.shutdown(wait=True)

    @contextlib.contextmanager
    def reading(self):
        """Around reading and parsing a request: the collector waits for such requests,
        and is woken when one is queued or refused."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1
            self.arrival.set()

    def submit(self, texts: list[str]) -> asyncio.Future:
        if len(self.queue) >= self.config.max_queue:
            raise ApiError(503, f"the server is busy: {len(self.queue)} requests are waiting "
                                "for the model; retry shortly", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        job = Job(texts, loop.create_future(), loop.time())
        self.queue.append(job)
        self.metrics.queue_depth.set(len(self.queue))
        self.arrival.set()
        return job.future

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self.arrival.clear()
                await self.arrival.wait()
            jobs = await self.gather(loop)
            self.metrics.queue_depth.set(len(self.queue))
            # A request past its deadline has been answered 504 and its future cancelled.
            live = [job for job in jobs if not job.future.done()]
            if live:
                await self.run(loop, live)

    async def gather(self, loop: asyncio.AbstractEventLoop) -> list[Job]:
        """The oldest waiting request and all that join it within max_wait_ms of its
        arrival, stopping early once their texts would fill a model call or no other
        request is on its way (so a lone request never waits)."""
        wait = self.config.max_wait_ms / 1000
        if wait <= 0:
            return [self.queue.popleft()]
        budget_chars = self.config.max_batch_tokens * CHARS_PER_TOKEN
        until = self.queue[0].arrived + wait

        def queued_chars() -> int:  # [CLS] and [SEP] count too
            return sum(len(t) + 2 * CHARS_PER_TOKEN for job in self.queue for t in job.texts)

        while self.incoming and loop.time() < until and queued_chars() < budget_chars:
            self.arrival.clear()
            try:
                await asyncio.wait_for(self.arrival.wait(), until - loop.time())
            except asyncio.TimeoutError:
                break
        jobs = list(self.queue)
        self.queue.clear()
        return jobs

    async def run(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> None:
        """The jobs' texts in one model call, or, for an artifact not known to be
        batch-invariant, each job's in a call of its own (no text beside a stranger's)."""
        for group in [jobs] if self.mix else [[job] for job in jobs]:
            await self.call(loop, group)

    async def call(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        tick = time.perf_counter()
        try:
            results = await loop.run_in_executor(self.model_thread,
                                                 self.predictor.predict_batch, texts)
        except Exception as error:  # the model failed: these requests fail, the server goes on
            log.exception("model call failed")
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(ApiError(500, f"the model call failed: {message}"))
            return
        finally:
            self.metrics.model_seconds.observe(time.perf_counter() - tick)
            self.metrics.batch_requests.observe(len(jobs))
            self.metrics.batch_texts.observe(len(texts))
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(results[start:start + len(job.texts)])
            start += len(job.texts)


@dataclass
class State:
    """What the routes share: the model once it is loaded, and the batcher in front of it."""

    config: ServeConfig
    metrics: Metrics = field(default_factory=Metrics)
    predictor: Predictor | None = None
    batcher: Batcher | None = None
    load_error: str | None = None
    loop: asyncio.AbstractEventLoop | None = None


def parse_texts(body: bytes, config: ServeConfig) -> tuple[list[str], bool]:
    """The texts of a request body and whether it sent one `text` (else `texts`); an
    ApiError naming the field for anything else."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise ApiError(400, "the body is not valid JSON: nested too deep") from None
    if not isinstance(payload, dict):
        raise ApiError(422, 'the body must be a JSON object with "text" or "texts"')
    unknown = sorted(set(payload) - {"text", "texts"})
    if unknown:
        raise ApiError(422, f"unknown field {unknown[0]!r}: send \"text\" or \"texts\"")
    if ("text" in payload) == ("texts" in payload):
        raise ApiError(422, 'send exactly one of "text" (a string) and "texts" (a list of '
                            "strings)")
    single = "text" in payload
    texts = [payload["text"]] if single else payload["texts"]
    if single and not isinstance(payload["text"], str):
        raise ApiError(422, '"text" must be a string')
    if not single and not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
        raise ApiError(422, '"texts" must be a list of strings')
    if len(texts) > config.max_texts:
        raise ApiError(413, f"{len(texts)} texts in one request; the limit is "
                            f"{config.max_texts} (--max-texts)")
    for index, text in enumerate(texts):
        where = '"text"' if single else f'"texts"[{index}]'
        if len(text) > config.max_text_chars:
            raise ApiError(413, f"{where} has {len(text)} characters; the limit is "
                                f"{config.max_text_chars} (--max-text-chars)")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # JSON can escape a lone surrogate; no tokenizer takes it
            raise ApiError(422, f"{where} is not valid Unicode (it holds a lone surrogate "
                                "escape)") from None
    return texts, single


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit`: from its
    Content-Length before anything is read, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {declared} bytes; the limit is {limit} "
                            "(--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(load: Callable[[], Predictor], config: ServeConfig) -> Starlette:
    """The API over the predictor `load` returns; it is loaded and warmed up in a thread
    after the server starts, and /healthz answers 503 until then."""
    state = State(config)

    async def entities(request: Request) -> Response:
        if state.batcher is None:
            raise ApiError(503, state.load_error or "the model is still loading; retry "
                           "shortly", {"Retry-After": "1"})
        with state.batcher.reading():
            texts, single = parse_texts(await read_body(request, config.max_body_bytes),
                                        config)
            request.state.texts = len(texts)
            future = state.batcher.submit(texts)
        try:
            found = await asyncio.wait_for(asyncio.shield(future), config.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()
            raise ApiError(504, f"no answer within the {config.timeout_s:g} s deadline "
                                "(--timeout-ms)") from None
        rows = [[entity.as_dict() for entity in text_entities] for text_entities in found]
        return JSONResponse({"entities": rows[0]} if single else {"results": rows})

    async def healthz(request: Request) -> Response:
        if state.batcher is None:
            return JSONResponse({"status": "error" if state.load_error else "loading",
                                 **({"error": state.load_error} if state.load_error else {})},
                                status_code=503)
        return JSONResponse({"status": "ok"})

    async def model(request: Request) -> Response:
        if state.predictor is None:
            raise ApiError(503, state.load_error or "the model is still loading")
        return JSONResponse(model_card(state.predictor))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(state.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(config))

    def load_in_background() -> None:
        try:
            predictor = load()
            predictor.predict_batch(list(config.warmup_texts))
        except Exception as error:  # the server stays up to say why on /healthz
            log.exception("the model failed to load")
            state.load_error = f"the model failed to load: {str(error).splitlines()[0]}"
            return
        state.loop.call_soon_threadsafe(ready, predictor)

    def ready(predictor: Predictor) -> None:
        state.predictor = predictor
        state.batcher = Batcher(predictor, config, state.metrics)
        state.batcher.start()
        log.info("ready: %s (%s); requests %s share model calls",
                 predictor.manifest.get("name", "the artifact"),
                 predictor.manifest.get("backend", "?"),
                 "do" if state.batcher.mix else "do not (not batch-invariant)")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        state.loop = asyncio.get_running_loop()
        threading.Thread(target=load_in_background, name="load", daemon=True).start()
        yield
        if state.batcher is not None:
            await state.batcher.stop()

    async def api_error(request: Request, error: ApiError) -> Response:
        return JSONResponse({"error": error.message}, status_code=error.status,
                            headers=error.headers)

    async def http_error(request: Request, error: HTTPException) -> Response:
        return JSONResponse({"error": error.detail}, status_code=error.status_code,
                            headers=error.headers)

    async def disconnected(request: Request, error: ClientDisconnect) -> Response:
        return Response(status_code=499)

    routes = [Route("/v1/entities", entities, methods=["POST"]),
              Route("/healthz", healthz, methods=["GET"]),
              Route("/v1/model", model, methods=["GET"]),
              Route("/metrics", metrics, methods=["GET"]),
              Route("/openapi.json", openapi, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: api_error, HTTPException: http_error,
                                        ClientDisconnect: disconnected})
    return RequestLog(app, state.metrics)


class RequestLog:
    """ASGI middleware: one log line a request (method, path, status, texts, ms; never the
    texts themselves) and the request counters and latency histogram."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        tick = time.perf_counter()
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - tick
            path = scope["path"]
            known = path in ("/v1/entities", "/healthz", "/v1/model", "/metrics",
                             "/openapi.json")
            self.metrics.requests.labels(path if known else "other", str(status)).inc()
            if path == "/v1/entities":
                self.metrics.request_seconds.observe(seconds)
            texts = scope.get("state", {}).get("texts")
            log.info("request", extra={"method": scope["method"], "path": path,
                                       "status": status, "texts": texts,
                                       "ms": round(1000 * seconds, 2)})


def model_card(predictor: Predictor) -> dict:
    """What /v1/model says of the artifact: its manifest's facts a caller can act on."""
    manifest = predictor.manifest
    return {
        "name": manifest.get("name"),
        "stage": manifest.get("stage"),
        "source": manifest.get("source_name") or manifest.get("base_model")
        or manifest.get("model_source"),
        "base_model": manifest.get("base_model") or manifest.get("model_source"),
        "backend": manifest.get("backend", "pytorch"),
        "precision": manifest.get("precision", "fp32"),
        "labels": predictor.labels,
        "entity_types": sorted({label[2:] for label in predictor.labels if label != "O"}),
        "valid_f1": manifest.get("valid_f1"),
        "test_f1": manifest.get("test_f1"),
        "size_mb": manifest.get("size_mb"),
        "batch_invariant": predictor.batch_invariant,
        "max_length": predictor.encoder.max_length,
    }


class LogFormatter(logging.Formatter):
    """A request's line as plain words or, with --log-json, one JSON object."""

    def __init__(self, as_json: bool):
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: getattr(record, key) for key in ("method", "path", "status", "texts",
                                                        "ms") if hasattr(record, key)}
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        if self.as_json:
            return json.dumps({"time": when, "level": record.levelname.lower(),
                               **(fields or {"message": record.getMessage()})})
        if fields:
            texts = "" if fields["texts"] is None else f" {fields['texts']} texts"
            return (f"{when} {fields['method']} {fields['path']} {fields['status']}{texts} "
                    f"{fields['ms']} ms")
        return f"{when} {record.levelname.lower()}: {record.getMessage()}"


def openapi_document(config: ServeConfig) -> dict:
    """The API's OpenAPI 3.1 description."""
    entity = {"type": "object", "required": ["type", "text", "start", "end", "score"],
              "properties": {
                  "type": {"type": "string", "examples": ["PER"]},
                  "text": {"type": "string", "description": "the input from start to end"},
                  "start": {"type": "integer", "description": "character offset, inclusive"},
                  "end": {"type": "integer", "description": "character offset, exclusive"},
                  "score": {"type": "number", "description": "mean probability of its tags"}}}
    error = {"type": "object", "required": ["error"],
             "properties": {"error": {"type": "string"}}}
    text = {"type": "string", "maxLength": config.max_text_chars}

    def errors(*codes: int) -> dict:
        return {str(code): {"description": description,
                            "content": {"application/json": {"schema": error}}}
                for code, description in ((400, "the body is not JSON"),
                                          (413, "over a size limit"),
                                          (422, "a field is missing or of the wrong type"),
                                          (500, "the model call failed"),
                                          (503, "loading, or the queue is full"),
                                          (504, "not answered within the deadline"))
                if code in codes}

    def get(summary: str, schema: dict, *codes: int) -> dict:
        return {"get": {"summary": summary, "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
            **errors(*codes)}}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "edge-ner", "version": "1",
                 "description": "Named entities, with character offsets, from raw text."},
        "paths": {
            "/v1/entities": {"post": {
                "summary": "Entities of one text, or of several in input order",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [
                        {"type": "object", "required": ["text"], "additionalProperties": False,
                         "properties": {"text": text}},
                        {"type": "object", "required": ["texts"], "additionalProperties": False,
                         "properties": {"texts": {"type": "array", "items": text,
                                                  "maxItems": config.max_texts}}}]}}}},
                "responses": {
                    "200": {"description": "`entities` for `text`, `results` for `texts`",
                            "content": {"application/json": {"schema": {"oneOf": [
                                {"type": "object", "required": ["entities"], "properties": {
                                    "entities": {"type": "array", "items": entity}}},
                                {"type": "object", "required": ["results"], "properties": {
                                    "results": {"type": "array", "items": {
                                        "type": "array", "items": entity}}}}]}}}},
                    **errors(400, 413, 422, 500, 503, 504)}}},
            "/healthz": get("200 once the model is loaded and warmed up, 503 before",
                            {"type": "object", "properties": {"status": {"type": "string"}}},
                            503),
            "/v1/model": get("The artifact's card", {"type": "object"}, 503),
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
    }


def serve(folder: str | Path, host: str, port: int, config: ServeConfig,
          log_json: bool = False) -> int:
    """Run the server until SIGTERM or Ctrl-C; requests in flight are finished first."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter(log_json))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    app = create_app(lambda: load_served(Path(folder), config), config)
    server = GracefulServer(uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=max(1, round(config.timeout_s))))
    log.info("listening on http://%s:%d", host, port)
    server.run()
    return 0


def load_served(folder: Path, config: ServeConfig) -> Predictor:
    """The artifact's Predictor, an ONNX model in a session whose threads spin or not as
    configured (other backends as the runtime loads them)."""
    from edgener.predictor import read_artifact_manifest
    from edgener.runtime import OnnxBackend

    backend = None
    if read_artifact_manifest(folder).get("backend") == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if not config.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        backend = OnnxBackend(folder / "model.onnx", config.threads, options)
    return Predictor.from_folder(folder, config.threads, backend=backend,
                                 max_batch_tokens=config.max_batch_tokens)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, except that SIGTERM or Ctrl-C ends the process with exit code 0
    once the requests in flight are answered: uvicorn raises the signal again after its
    graceful shutdown, and the process would die of it."""

    def handle_exit(self, sig: int, frame) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting
        else:
            self.should_exit = True
