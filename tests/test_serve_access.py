"""Who may use `edge-ner serve`: an API key on every route but /healthz, HTTPS with a
certificate the test makes, and the refusal to serve beyond loopback without a key. Real
servers on loopback."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from edgener.serve.auth import is_loopback
from tests.test_cli import EDGE_NER, edge_ner
from tests.test_predictor import artifacts  # noqa: F401 (a fixture)
from tests.test_serving import (  # noqa: F401 (fixtures)
    BAD_INPUTS,
    LIMITS,
    call,
    free_port,
    invariant_artifact,
    metric,
    running,
)

KEY = "s3cret-key-for-tests-only"
BEARER = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def keyed_server(invariant_artifact):  # noqa: F811
    """Limits as the bad-input tests' server, the key from the environment."""
    with running(invariant_artifact, *LIMITS,
                 env={"EDGE_NER_API_KEY": KEY}) as (port, process):
        yield port, process


def test_every_route_but_healthz_needs_the_key(keyed_server):
    port, process = keyed_server
    assert call(port, "GET", "/healthz")[0] == 200
    body = {"text": "Angela Merkel visited Paris."}
    status, headers, answer = call(port, "POST", "/v1/entities", body)
    assert status == 401 and "Authorization: Bearer <key>" in answer["error"]
    assert headers["www-authenticate"] == 'Bearer realm="edge-ner"'
    status, headers, answer = call(port, "POST", "/v1/entities", body,
                                   {"authorization": "Bearer not-the-key"})
    assert status == 401 and answer["error"] == "the API key is not valid"
    assert headers["www-authenticate"] == 'Bearer realm="edge-ner", error="invalid_token"'
    assert call(port, "POST", "/v1/entities", body, {"authorization": KEY})[0] == 401
    status, _, answer = call(port, "POST", "/v1/entities", body, BEARER)
    assert status == 200 and "entities" in answer
    for path in ("/v1/model", "/metrics", "/openapi.json"):
        assert call(port, "GET", path)[0] == 401, path
        assert call(port, "GET", path, headers=BEARER)[0] == 200, path
    metrics = call(port, "GET", "/metrics", headers=BEARER)[2]
    assert metric(metrics, 'edge_ner_requests_total{path="/v1/entities",status="401"}') >= 3
    document = call(port, "GET", "/openapi.json", headers=BEARER)[2]
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert "security" in document["paths"]["/v1/entities"]["post"]
    assert "security" not in document["paths"]["/healthz"]["get"]
    # The key is in no log line, no card, no document.
    time.sleep(0.5)
    assert "401" in process.log_path.read_text()
    assert KEY not in process.log_path.read_text()
    assert KEY not in json.dumps(document) + json.dumps(
        call(port, "GET", "/v1/model", headers=BEARER)[2])


@pytest.mark.parametrize(("body", "status", "words"), BAD_INPUTS)
def test_bad_input_answers_the_same_with_a_key(keyed_server, body, status, words):
    got, _, answer = call(keyed_server[0], "POST", "/v1/entities", body,
                          {"content-type": "application/json", **BEARER})
    assert got == status and words in answer["error"], answer


def test_metrics_can_stay_open_to_scrapers_and_a_key_file_is_read(
        invariant_artifact, tmp_path):  # noqa: F811
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    with running(invariant_artifact, "--api-key-file", str(key_file),
                 "--metrics-without-key") as (port, _):
        assert call(port, "GET", "/metrics")[0] == 200
        assert call(port, "GET", "/v1/model")[0] == 401
        assert call(port, "GET", "/v1/model", headers=BEARER)[0] == 200  # newline dropped


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return key, cert


def test_https_with_a_certificate_the_client_verifies(invariant_artifact, tmp_path):  # noqa: F811
    key, cert = make_certificate(tmp_path)
    port = free_port()
    log_path = Path(tempfile.mkdtemp()) / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(EDGE_NER), "serve", str(invariant_artifact), "--port", str(port),
             "--threads", "1", "--ssl-keyfile", str(key), "--ssl-certfile", str(cert)],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "EDGE_NER_API_KEY": KEY})
    verified = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.time() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                                         context=verified)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
                connection.close()
            except (OSError, http.client.HTTPException):
                assert time.time() < deadline, log_path.read_text()
                time.sleep(0.1)
        connection.close()
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                                 context=verified)
        connection.request("POST", "/v1/entities", body=json.dumps({"text": "Paris"}),
                           headers=BEARER)
        assert connection.getresponse().status == 200
        connection.close()
        # A client that trusts only the system's authorities refuses the self-signed one.
        strict = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                             context=ssl.create_default_context())
        with pytest.raises(ssl.SSLCertVerificationError):
            strict.request("GET", "/healthz")
        strict.close()
        # Plain HTTP gets no answer.
        with pytest.raises((OSError, http.client.HTTPException)):
            call(port, "GET", "/healthz", timeout=5)
        assert "listening on https://" in log_path.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_beyond_loopback_without_a_key_the_server_refuses_to_start(
        invariant_artifact, tmp_path):  # noqa: F811
    result = edge_ner("serve", str(invariant_artifact), "--host", "0.0.0.0", "--port",
                      str(free_port()), cwd=tmp_path)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "refusing to serve on 0.0.0.0 without an API key" in result.stderr
    assert "--insecure" in result.stderr
    # --insecure passes the refusal: the next check (half a TLS setup) is what stops it,
    # before anything binds beyond loopback.
    half = edge_ner("serve", str(invariant_artifact), "--host", "0.0.0.0", "--insecure",
                    "--ssl-keyfile", "k.pem", cwd=tmp_path)
    assert half.returncode == 1 and "needs both --ssl-keyfile and --ssl-certfile" in half.stderr
    assert [is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost")] \
        == [True] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "192.168.1.20", "::", "edge-box.local")] \
        == [False] * 4
