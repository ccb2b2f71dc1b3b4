"""`edge-ner serve`: uvicorn running the app, with a graceful exit on SIGTERM.

    edge-ner serve runs/conll2003/quantized/L3-ort-int8-dynamic --port 8080
    curl -s localhost:8080/v1/entities -d '{"text": "Angela Merkel visited Paris."}'
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import onnxruntime as ort
import uvicorn

from edgener.predictor import open_predictor
from edgener.runtime.backend import OnnxBackend
from edgener.runtime.predictor import Predictor, read_artifact_manifest
from edgener.serve.app import create_app
from edgener.serve.config import ServeConfig
from edgener.serve.logs import start_logging
from edgener.serve.metrics import Metrics

log = logging.getLogger("edgener.serve")


def serve(folder: str | Path, host: str, port: int, config: ServeConfig,
          log_json: bool = False, ssl_keyfile: str | None = None,
          ssl_certfile: str | None = None) -> int:
    """Run the server until SIGTERM or Ctrl-C; requests in flight are finished first.
    With a key and certificate, uvicorn serves HTTPS."""
    metrics = Metrics()
    writer = start_logging(log_json, metrics.log_records_dropped.inc)
    app = create_app(lambda: load_served(Path(folder), config), config, metrics)
    # log_config=None: uvicorn's own loggers keep the queued handler start_logging gave them.
    server = GracefulServer(uvicorn.Config(
        app, host=host, port=port, log_config=None, log_level="warning", access_log=False,
        timeout_graceful_shutdown=max(1, round(config.timeout_s)),
        ssl_keyfile=ssl_keyfile, ssl_certfile=ssl_certfile))
    log.info("listening on %s://%s:%d%s", "https" if ssl_certfile else "http", host, port,
             "; every route but /healthz needs the API key" if config.api_key else "")
    try:
        server.run()
    finally:
        writer.stop(timeout=1.0)
    return 0


def load_served(folder: Path, config: ServeConfig) -> Predictor:
    """The artifact's Predictor, an ONNX model in a session whose threads spin or not as
    configured (other backends as the runtime loads them)."""
    backend = None
    if read_artifact_manifest(folder).get("backend") == "onnxruntime":
        options = ort.SessionOptions()
        if not config.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        backend = OnnxBackend(folder / "model.onnx", config.threads, options)
    return open_predictor(folder, config.threads, backend=backend,
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
