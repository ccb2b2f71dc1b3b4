"""`edge-ner serve`: a real server on a loopback port, started by each test, and a real HTTP
client (the standard library's), against tiny artifacts."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgener.predictor import open_predictor
from edgener.runtime.artifacts import read_json, write_json_atomic
from edgener.runtime.inference import batch_invariance
from tests.test_cli import edge_ner
from tests.test_predictor import TEXTS, artifacts  # noqa: F401 (a fixture)

EDGE_NER = Path(sys.executable).parent / "edge-ner"
MORE_TEXTS = [*TEXTS, "", "Rome", "Zoë Müller flew from São Paulo to Kraków.",
              "Angela Merkel visited Paris . " * 12]
LONG_TEXT = "Angela Merkel visited Paris with Bob on Monday . " * 1800  # ~90,000 characters


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(port: int, method: str, path: str, body: bytes | dict | None = None,
         headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, object]:
    """(status, headers, parsed JSON or text) of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        kind = response.getheader("content-type", "")
        parsed = json.loads(raw) if kind.startswith("application/json") else raw.decode()
        return response.status, dict(response.getheaders()), parsed
    finally:
        connection.close()


def wait_ready(port: int, process: subprocess.Popen | None = None, timeout: float = 60,
               answered: bool = False) -> None:
    """Until /healthz says 200 (or, with `answered`, says anything)."""
    until = time.time() + timeout
    while time.time() < until:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited: {process.log_path.read_text()[-2000:]}")
        try:
            if call(port, "GET", "/healthz", timeout=2)[0] == 200 or answered:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


@contextmanager
def running(folder: Path, *options: str, ready: bool = True, env: dict | None = None):
    """`edge-ner serve` in a subprocess on a free loopback port; yields (port, process)
    once the model is loaded (`ready`), or once the port answers. Its log goes to a file
    (process.log_path): a pipe nobody reads would fill with the request lines and stall
    the server."""
    port = free_port()
    log_path = Path(tempfile.mkdtemp()) / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(EDGE_NER), "serve", str(folder), "--port", str(port),
                                    "--threads", "1", *options],
                                   stdout=subprocess.DEVNULL, stderr=log,
                                   env=None if env is None else {**os.environ, **env})
    process.log_path = log_path
    try:
        wait_ready(port, process, answered=not ready)
        yield port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def invariant_artifact(artifacts, tmp_path_factory) -> Path:  # noqa: F811
    """The tiny dynamic INT8 artifact, its manifest carrying the batch-invariance check the
    quantize stage records (measured here), so the server may share model calls."""
    folder = tmp_path_factory.mktemp("served") / "onnx-int8"
    shutil.copytree(artifacts["onnx-int8"], folder)
    predictor = open_predictor(folder, threads=1)
    check = batch_invariance(predictor.backend, predictor.encoder,
                             [t.split() for t in MORE_TEXTS if t] * 4)
    assert check["invariant"]
    manifest = read_json(folder / "manifest.json") | {"batch_invariance": check,
                                                       "name": "tiny-int8"}
    write_json_atomic(folder / "manifest.json", manifest)
    return folder


@pytest.fixture(scope="module")
def server(invariant_artifact):
    with running(invariant_artifact, "--max-wait-ms", "20") as (port, _):
        yield port


@pytest.fixture(scope="module")
def expected(invariant_artifact) -> dict[str, list[dict]]:
    predictor = open_predictor(invariant_artifact, threads=1)
    return {text: [e.as_dict() for e in predictor.predict(text)] for text in MORE_TEXTS}


def test_entities_are_the_runtime_entities_and_texts_keep_their_order(server, expected):
    assert any(expected[text] for text in MORE_TEXTS)  # something to compare
    for text in MORE_TEXTS:
        status, _, answer = call(server, "POST", "/v1/entities", {"text": text})
        assert status == 200 and answer == {"entities": expected[text]}, text
    order = MORE_TEXTS[::-1]
    status, _, answer = call(server, "POST", "/v1/entities", {"texts": order})
    assert status == 200 and answer == {"results": [expected[t] for t in order]}
    assert call(server, "POST", "/v1/entities", {"texts": []})[2] == {"results": []}


def test_concurrent_clients_each_get_their_own_entities_from_shared_model_calls(
        server, expected):
    def client(index: int) -> list[tuple]:
        mismatches = []
        for round_index in range(6):
            texts = [MORE_TEXTS[(index + round_index + k) % len(MORE_TEXTS)]
                     for k in range(1 + index % 3)]
            status, _, answer = call(server, "POST", "/v1/entities", {"texts": texts})
            if status != 200 or answer["results"] != [expected[t] for t in texts]:
                mismatches.append((index, status, texts))
        return mismatches

    with ThreadPoolExecutor(16) as pool:
        assert [m for found in pool.map(client, range(16)) for m in found] == []
    # Micro-batching batched: some model call served more than one request.
    metrics = call(server, "GET", "/metrics")[2]
    calls = metric(metrics, "edge_ner_batch_requests_count")
    single = metric(metrics, 'edge_ner_batch_requests_bucket{le="1.0"}')
    assert calls > 0 and calls - single > 0, (calls, single)


@pytest.fixture(scope="module")
def varying_artifact(artifacts, tmp_path_factory) -> Path:  # noqa: F811
    """The tiny model quantized the usual way (ONNX Runtime's quantize_dynamic: one
    activation scale for the whole batch), so a text's entities depend on its batch-mates;
    its manifest carries the check that measured so."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = tmp_path_factory.mktemp("varying") / "int8-batch-scale"
    shutil.copytree(artifacts["onnx-fp32"], folder)
    quantize_dynamic(artifacts["onnx-fp32"] / "model.onnx", folder / "model.onnx",
                     weight_type=QuantType.QInt8)
    predictor = open_predictor(folder, threads=1)
    check = batch_invariance(predictor.backend, predictor.encoder,
                             [t.split() for t in MORE_TEXTS if t] * 4)
    assert not check["invariant"], "the batch-scale model should vary with its batch"
    manifest = read_json(folder / "manifest.json") | {"batch_invariance": check}
    write_json_atomic(folder / "manifest.json", manifest)
    return folder


def test_an_artifact_that_varies_with_its_batch_keeps_each_request_in_its_own_calls(
        varying_artifact):
    predictor = open_predictor(varying_artifact, threads=1)
    requests = [[MORE_TEXTS[(i + k) % len(MORE_TEXTS)] for k in range(1 + i % 3)]
                for i in range(16)]
    # What each request gets alone: its own texts in one call, nobody else's.
    alone = [[[e.as_dict() for e in found] for found in predictor.predict_batch(texts)]
             for texts in requests]
    with running(varying_artifact, "--max-wait-ms", "50") as (port, _):
        assert call(port, "GET", "/v1/model")[2]["batch_invariant"] is False
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda texts: call(port, "POST", "/v1/entities",
                                                       {"texts": texts}), requests))
        metrics = call(port, "GET", "/metrics")[2]
    assert [a[2]["results"] for a in answers] == alone
    calls = metric(metrics, "edge_ner_batch_requests_count")
    assert calls >= 16 and metric(metrics, 'edge_ner_batch_requests_bucket{le="1.0"}') == calls


def test_while_the_model_loads_and_after_it_failed_every_model_route_says_503(
        invariant_artifact, tmp_path):
    # A model file that is a pipe: loading waits until the test writes the model into it.
    loading = tmp_path / "loading"
    shutil.copytree(invariant_artifact, loading)
    model = (loading / "model.onnx").read_bytes()
    (loading / "model.onnx").unlink()
    os.mkfifo(loading / "model.onnx")
    with running(loading, ready=False) as (port, process):
        status, headers, answer = call(port, "GET", "/healthz")
        assert (status, answer) == (503, {"status": "loading"})
        status, headers, answer = call(port, "POST", "/v1/entities", {"text": "Rome"})
        assert status == 503 and "still loading" in answer["error"]
        assert headers["retry-after"] == "1"
        assert call(port, "GET", "/v1/model")[0] == 503
        with open(loading / "model.onnx", "wb") as pipe:
            pipe.write(model)
        wait_ready(port, process)
        assert call(port, "POST", "/v1/entities", {"text": "Rome"})[0] == 200
    broken = tmp_path / "broken"
    shutil.copytree(invariant_artifact, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    with running(broken, ready=False) as (port, _):
        deadline = time.time() + 60
        while (answer := call(port, "GET", "/healthz"))[2].get("status") == "loading":
            assert time.time() < deadline, "the load neither ended nor failed"
            time.sleep(0.1)
        status, _, health = answer
        assert status == 503 and health["status"] == "error"
        assert health["error"].startswith("the model failed to load: ")
        status, _, answer = call(port, "POST", "/v1/entities", {"text": "Rome"})
        assert status == 503 and answer["error"] == health["error"]


def metric(text: str, series: str) -> float:
    """The value of one series (name and labels as Prometheus prints them)."""
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(series + " "))


def test_health_model_card_metrics_and_openapi(server, invariant_artifact):
    assert call(server, "GET", "/healthz")[:3:2] == (200, {"status": "ok"})
    status, _, card = call(server, "GET", "/v1/model")
    assert status == 200 and card["name"] == "tiny-int8" and card["backend"] == "onnxruntime"
    assert card["precision"] == "int8" and card["batch_invariant"] is True
    assert card["labels"][0] == "O" and "PER" in card["entity_types"]
    status, headers, text = call(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("edge_ner_requests_total", "edge_ner_request_seconds_bucket",
                 "edge_ner_model_call_seconds_bucket", "edge_ner_batch_requests_bucket",
                 "edge_ner_queue_depth"):
        assert name in text, name
    assert 'path="/v1/entities",status="200"' in text
    status, _, document = call(server, "GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    assert set(document["paths"]) == {"/v1/entities", "/healthz", "/v1/model", "/metrics"}
    assert "post" in document["paths"]["/v1/entities"]


BAD_INPUTS = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 422, '"text" or "texts"'),
    (b'{"text": 3}', 422, '"text" must be a string'),
    (b'{"texts": ["a", 2]}', 422, '"texts" must be a list of strings'),
    (b'{"texts": "abc"}', 422, '"texts" must be a list of strings'),
    (b"{}", 422, "exactly one of"),
    (b'{"text": "a", "texts": ["b"]}', 422, "exactly one of"),
    (b'{"txt": "a"}', 422, "unknown field 'txt'"),
    (b'{"text": "a", "document": true}', 422, '"document" must be true or false, and goes'),
    (b'{"texts": ["a"], "document": 1}', 422, '"document" must be true or false'),
    (b'{"texts": ["ok", "\\ud800"]}', 422, '"texts"[1] is not valid Unicode'),
    (b"[" * 100_000, 413, "--max-body-bytes"),
    (b"[" * 1500, 400, "not valid JSON"),
    (b'{"text": "' + b"a" * 600 + b'"}', 413, "limit is 500 (--max-text-chars)"),
    (b'{"texts": ["a", "b", "c", "d", "e"]}', 413, "limit is 4 (--max-texts)"),
    (b'{"text": "' + b"a" * 3000 + b'"}', 413, "limit is 2000 (--max-body-bytes)"),
]
LIMITS = ("--max-text-chars", "500", "--max-texts", "4", "--max-body-bytes", "2000")


@pytest.mark.parametrize(("body", "status", "words"), BAD_INPUTS)
def test_bad_input_is_a_json_error_naming_what_is_wrong(limited_server, body, status, words):
    got, _, answer = call(limited_server, "POST", "/v1/entities", body,
                          {"content-type": "application/json"})
    assert got == status and words in answer["error"], answer


@pytest.fixture(scope="module")
def limited_server(invariant_artifact):
    with running(invariant_artifact, *LIMITS) as (port, _):
        yield port


def test_a_streamed_body_over_the_limit_is_refused_before_it_is_read_whole(limited_server):
    """No Content-Length (chunked): 3 KB sent of a body that never ends. A server that
    read bodies whole would still be waiting for the rest; this one answers 413 now."""
    connection = http.client.HTTPConnection("127.0.0.1", limited_server, timeout=10)
    connection.putrequest("POST", "/v1/entities")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for piece in (b'{"text": "', b"a" * 1000, b"a" * 1000, b"a" * 1000):
        connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    response = connection.getresponse()  # no terminating chunk: the body is unfinished
    assert response.status == 413 and "--max-body-bytes" in json.loads(response.read())["error"]
    connection.close()
    connection.close()


def test_wrong_method_and_unknown_path_are_json_errors(server):
    status, headers, answer = call(server, "GET", "/v1/entities")
    assert status == 405 and "error" in answer and "POST" in headers.get("allow", "")
    status, _, answer = call(server, "GET", "/v2/nothing")
    assert status == 404 and "error" in answer


def test_a_full_queue_is_503_with_retry_after_and_a_late_answer_is_504(invariant_artifact):
    with running(invariant_artifact, "--max-queue", "1", "--max-wait-ms", "300") as (port, _):
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: call(port, "POST", "/v1/entities",
                                                   {"text": "Rome"}), range(6)))
        busy = [a for a in answers if a[0] == 503]
        assert busy and all(a[1].get("retry-after") == "1" for a in busy), answers
        assert all("busy" in a[2]["error"] for a in busy)
        assert any(a[0] == 200 for a in answers)
    # A text of thousands of windows keeps the model busy well past a 50 ms deadline.
    with running(invariant_artifact, "--timeout-ms", "50") as (port, _):
        status, _, answer = call(port, "POST", "/v1/entities", {"text": LONG_TEXT})
        assert status == 504 and "deadline" in answer["error"]
        assert call(port, "GET", "/healthz")[0] == 200


def test_a_lone_request_does_not_wait_for_company(invariant_artifact):
    """Coalescing waits only while other requests are on their way: alone, a request runs
    at once, however long --max-wait-ms is (here 5 s)."""
    with running(invariant_artifact, "--max-wait-ms", "5000") as (port, _):
        tick = time.perf_counter()
        for _ in range(3):
            assert call(port, "POST", "/v1/entities", {"text": "Rome"})[0] == 200
        assert time.perf_counter() - tick < 5


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                 | st.text(max_size=40), lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.sampled_from(["text", "texts", "x"]) | st.text(max_size=5),
                                   inner, max_size=3), max_leaves=8).map(
        lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"text": st.text(max_size=300)}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"texts": st.lists(st.text(max_size=80), max_size=6)}).map(
        lambda v: json.dumps(v).encode())))
def test_fuzzed_bodies_never_get_a_server_error(limited_server, body):
    status, _, answer = call(limited_server, "POST", "/v1/entities", body)
    assert status < 500, (status, answer)
    assert isinstance(answer, dict) and ("error" in answer) == (status != 200)


def test_bounded_load_has_no_errors(server):
    """32 clients, 2,000 requests, within two minutes."""
    started = time.time()

    def client(index: int) -> list[int]:
        statuses = []
        for k in range(index, 2000, 32):
            statuses.append(call(server, "POST", "/v1/entities",
                                 {"text": MORE_TEXTS[k % len(MORE_TEXTS)]})[0])
        return statuses

    with ThreadPoolExecutor(32) as pool:
        statuses = [s for found in pool.map(client, range(32)) for s in found]
    assert len(statuses) == 2000 and set(statuses) == {200}
    assert time.time() - started < 120


def test_sigterm_finishes_the_requests_in_flight_then_exits_0(invariant_artifact, expected):
    """Long texts keep the requests in the model for a while; SIGTERM comes while they are
    there, and every one of them is answered in full before the process exits 0."""
    with running(invariant_artifact) as (port, process):
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(call, port, "POST", "/v1/entities",
                                   {"texts": [LONG_TEXT, text]}, timeout=120)
                       for text in MORE_TEXTS[:6]]
            time.sleep(0.5)
            assert not all(future.done() for future in futures)  # still in flight
            process.send_signal(signal.SIGTERM)
            answers = [future.result() for future in futures]
        assert process.wait(timeout=60) == 0
    assert [a[0] for a in answers] == [200] * 6
    assert [a[2]["results"][1] for a in answers] == [expected[t] for t in MORE_TEXTS[:6]]


def test_requests_log_one_line_each_without_the_texts(invariant_artifact):
    with running(invariant_artifact, "--log-json") as (port, process):
        call(port, "POST", "/v1/entities", {"texts": ["Secret Person lives here", "x"]})
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    log = process.log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    entry = next(line for line in lines if line.get("path") == "/v1/entities")
    assert entry["method"] == "POST" and entry["status"] == 200 and entry["texts"] == 2
    assert entry["ms"] > 0 and "Secret" not in log


def test_a_log_sink_nobody_reads_never_stalls_the_server(invariant_artifact):
    """stderr on a pipe that is never read (64 KB fill it): 32 clients get all 5,000
    requests answered, /healthz answers, the lines that did not fit are dropped and counted,
    and SIGTERM ends the process with exit code 0."""
    port = free_port()
    process = subprocess.Popen([str(EDGE_NER), "serve", str(invariant_artifact), "--port",
                                str(port), "--threads", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process.log_path = Path(tempfile.mkdtemp()) / "unread"  # wait_ready's message if it dies
    process.log_path.write_text("(stderr is a pipe nobody reads)")
    try:
        wait_ready(port, process)

        def client(index: int) -> list[int]:
            return [call(port, "POST", "/v1/entities",
                         {"text": MORE_TEXTS[k % len(MORE_TEXTS)]}, timeout=60)[0]
                    for k in range(index, 5000, 32)]

        with ThreadPoolExecutor(32) as pool:
            statuses = [s for found in pool.map(client, range(32)) for s in found]
        assert len(statuses) == 5000 and set(statuses) == {200}
        assert call(port, "GET", "/healthz", timeout=10)[:3:2] == (200, {"status": "ok"})
        text = call(port, "GET", "/metrics", timeout=10)[2]
        assert metric(text, 'edge_ner_requests_total{path="/v1/entities",status="200"}') \
            == 5000
        # ~60 bytes a line: the pipe holds about a thousand, the queue a thousand more.
        assert metric(text, "edge_ner_log_records_dropped_total") > 1000
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def test_log_lines_for_a_stalled_pipe_are_dropped_and_counted_never_waited_for():
    """In-process, on a real pipe nobody reads: 5,000 lines are logged without waiting, the
    first ones reach the pipe whole and in order, the ones that fit nowhere are counted,
    and the writer stops although the pipe never drains."""
    import logging

    from edgener.serve.logs import QUEUE_LINES, SERVER_LOGGERS, start_logging

    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in SERVER_LOGGERS}
    read_end, write_end = os.pipe()
    dropped = []
    try:
        with os.fdopen(write_end, "w") as stream:
            writer = start_logging(False, lambda: dropped.append(1), stream)
            for k in range(5 * QUEUE_LINES):
                logging.getLogger("edgener.serve").info("line %05d", k)
            writer.stop(timeout=0.5)
            assert not writer.thread.is_alive()
        os.set_blocking(read_end, False)
        written = b"".join(iter(lambda: os.read(read_end, 1 << 16), b"")).decode()
    except BlockingIOError:  # the pipe is empty
        raise AssertionError("nothing reached the pipe") from None
    finally:
        os.close(read_end)
        for name, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:], logger.propagate = handlers, propagate
            logger.setLevel(level)
    lines = written.splitlines()
    assert [line.split(" info: ")[1] for line in lines[:100]] == \
        [f"line {k:05d}" for k in range(100)]
    # Every line reached the pipe (~64 KB of them), waited in the queue or the writer's
    # hand when it stopped, or was dropped and counted.
    assert 1000 < len(lines) < 5 * QUEUE_LINES - QUEUE_LINES
    assert len(dropped) >= 5 * QUEUE_LINES - len(lines) - QUEUE_LINES - 1


def test_metrics_count_the_input_tokens_the_vocabulary_does_not_know(server):
    def counts() -> tuple[float, float]:
        text = call(server, "GET", "/metrics")[2]
        return (metric(text, "edge_ner_input_tokens_total"),
                metric(text, "edge_ner_unknown_tokens_total"))

    tokens, unknown = counts()
    # MiniLM's vocabulary knows these English words, one piece each, and not the snowman.
    assert call(server, "POST", "/v1/entities", {"text": "Paris and London"})[0] == 200
    assert counts() == (tokens + 3, unknown)
    assert call(server, "POST", "/v1/entities", {"texts": ["☃ Paris ☃", "☃"]})[0] == 200
    assert counts() == (tokens + 7, unknown + 3)
    share = metric(call(server, "GET", "/metrics")[2], "edge_ner_unknown_token_share")
    assert share == pytest.approx((unknown + 3) / (tokens + 7))


# A failing model call, planted in-process: the same app on uvicorn in a thread.


@pytest.fixture
def planted_failure(invariant_artifact):
    """A server whose model raises for any batch holding a window over 12 tokens."""
    import uvicorn

    from edgener.serve.app import create_app
    from edgener.serve.config import ServeConfig

    predictor = open_predictor(invariant_artifact, threads=1)
    backend = predictor.backend

    def failing(batch):
        if batch["input_ids"].shape[1] > 12:
            raise RuntimeError("planted failure")
        return backend(batch)

    predictor.backend = failing
    port = free_port()
    app = create_app(lambda: predictor, ServeConfig(max_wait_ms=0, warmup_texts=("Rome",)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    wait_ready(port)
    yield port
    server.should_exit = True
    thread.join(timeout=30)


def test_a_failing_model_call_fails_its_requests_and_the_server_goes_on(planted_failure):
    status, _, answer = call(planted_failure, "POST", "/v1/entities",
                             {"text": "Angela Merkel visited Paris with Bob . " * 4})
    assert status == 500 and answer["error"] == "the model call failed: planted failure"
    status, _, answer = call(planted_failure, "POST", "/v1/entities", {"text": "Rome"})
    assert status == 200 and "entities" in answer
    assert call(planted_failure, "GET", "/healthz")[0] == 200


def test_without_the_serve_extra_the_command_says_what_to_install(invariant_artifact, tmp_path):
    result = edge_ner("serve", str(invariant_artifact), cwd=tmp_path, lean=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pip install 'edge-ner[serve]'" in result.stderr
    missing = edge_ner("serve", str(tmp_path / "nothing"), cwd=tmp_path)
    assert missing.returncode == 1 and "no artifact at" in missing.stderr
