"""The HTTP API over one artifact, with concurrent requests coalesced into shared model
calls (Triton's dynamic batching, for one model on a small box).

Starlette on uvicorn: both pure Python, a few MB on top of the lean runtime, and the
ASGI stack FastAPI itself runs on, without pydantic (the request schema is two fields, and
the OpenAPI document is written out in edgener.serve.openapi).

Requests wait in one bounded queue. A collector takes everything that arrived within
`max_wait_ms` of the oldest waiting request (less, once the queued texts would fill a
model call or no other request is being read, so a lone request never waits) and runs it
as one `predict_batch` in the model's own thread, off the event loop; each request gets
back only its own texts' entities. That is safe only where the artifact's manifest records
it batch-invariant (a text's entities the same whatever it is batched with); otherwise
each request keeps model calls of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgener.runtime.predictor import Predictor
from edgener.serve.auth import OPEN_PATHS, ApiKeyGate
from edgener.serve.batcher import Batcher
from edgener.serve.config import ServeConfig
from edgener.serve.metrics import Metrics
from edgener.serve.openapi import openapi_document
from edgener.serve.requests import ApiError, parse_texts, read_body

log = logging.getLogger("edgener.serve")


@dataclass
class State:
    """What the routes share: the model once it is loaded, and the batcher in front of it."""

    config: ServeConfig
    metrics: Metrics = field(default_factory=Metrics)
    predictor: Predictor | None = None
    batcher: Batcher | None = None
    load_error: str | None = None
    loop: asyncio.AbstractEventLoop | None = None


def create_app(load: Callable[[], Predictor], config: ServeConfig,
               metrics: Metrics | None = None) -> Starlette:
    """The API over the predictor `load` returns; it is loaded and warmed up in a thread
    after the server starts, and /healthz answers 503 until then."""
    state = State(config, metrics or Metrics())

    async def entities(request: Request) -> Response:
        if state.batcher is None:
            raise ApiError(503, state.load_error or "the model is still loading; retry "
                           "shortly", {"Retry-After": "1"})
        with state.batcher.reading():
            texts, single, document = parse_texts(
                await read_body(request, config.max_body_bytes), config)
            request.state.texts = len(texts)
            future = state.batcher.submit(texts, document)
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
    if config.api_key:
        open_paths = OPEN_PATHS | ({"/metrics"} if not config.metrics_need_key else set())
        app = ApiKeyGate(app, config.api_key, frozenset(open_paths))
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
