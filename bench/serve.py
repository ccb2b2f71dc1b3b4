"""How `edge-ner serve` holds up under concurrent load on this machine: requests/s and
latency at several concurrency levels, with micro-batching on and off, against the same
artifact tagging in-process.

    python -m bench.serve runs/conll2003/quantized/L3-ort-int8-dynamic

The server runs as `edge-ner serve` (its own process, `--threads` model threads); the load
generator is asyncio in this process, on the same cores, each virtual client sending one
test sentence a request on its own keep-alive connection. Before the server starts, the
artifact is timed in-process: batch-1 p50 and sentences/s over the test split in one
batched call. For each level the server's /metrics give where the time went: model calls,
requests a call, time in the model against time answering. With --unread-stderr the
server's stderr is a pipe this process never reads, as under a stalled log sink: the log
lines that did not fit are counted, and the server must still answer every request and
exit 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from bench.measure import latency_round, sentence_texts
from edgener.predictor import open_predictor
from edgener.runtime.conll import read_conll
from edgener.runtime.console import console, print_wide, run_cli

EDGE_NER = Path(sys.executable).parent / "edge-ner"


async def one_client(port: int, bodies: list[bytes], latencies: list[float],
                     errors: list[int], headers: bytes = b"") -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            tick = time.perf_counter()
            writer.write(b"POST /v1/entities HTTP/1.1\r\nHost: bench\r\n" + headers +
                         b"Content-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            latencies.append(1000 * (time.perf_counter() - tick))
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def load(port: int, texts: list[str], concurrency: int, requests: int,
               headers: bytes = b"") -> dict:
    """`requests` one-sentence requests from `concurrency` keep-alive clients; `headers`
    (complete lines) go into every request."""
    bodies = [json.dumps({"text": texts[i % len(texts)]}).encode() for i in range(requests)]
    latencies: list[float] = []
    errors: list[int] = []
    tick = time.perf_counter()
    await asyncio.gather(*(one_client(port, bodies[c::concurrency], latencies, errors,
                                      headers) for c in range(concurrency)))
    seconds = time.perf_counter() - tick
    return {"requests_per_s": requests / seconds, "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)), "errors": len(errors),
            "seconds": seconds}


def scrape(port: int) -> dict[str, float]:
    """The server's model-call and dropped-log counters, from /metrics."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    wanted = ("edge_ner_model_call_seconds_sum", "edge_ner_model_call_seconds_count",
              "edge_ner_batch_requests_sum", "edge_ner_request_seconds_sum",
              "edge_ner_log_records_dropped_total")
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.split(" ")[0] in wanted}


def start_server(folder: Path, port: int, threads: int, wait_ms: float,
                 extra: list[str], unread_stderr: bool = False) -> subprocess.Popen:
    process = subprocess.Popen([str(EDGE_NER), "serve", str(folder), "--port", str(port),
                                "--threads", str(threads), "--max-wait-ms", str(wait_ms),
                                "--max-queue", "1024", *extra],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE if unread_stderr else subprocess.DEVNULL)
    until = time.time() + 60
    while time.time() < until:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not become ready within 60 s")


def in_process(folder: Path, texts: list[str], threads: int) -> dict:
    predictor = open_predictor(folder, threads)
    latency_round(predictor, texts[:50])
    p50 = statistics.median(latency_round(predictor, texts[::10]))
    predictor.predict_batch(texts[:200])
    tick = time.perf_counter()
    predictor.predict_batch(texts)
    return {"batch1_p50_ms": p50, "batched_sps": len(texts) / (time.perf_counter() - tick)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--test-file", default="../shared/data/conll2003/test.txt")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--requests", type=int, default=2000, help="per level")
    parser.add_argument("--threads", type=int, default=2, help="the server's model threads")
    parser.add_argument("--wait-ms", type=float, default=5.0,
                        help="--max-wait-ms of the micro-batching server")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--unread-stderr", action="store_true",
                        help="the server's stderr on a pipe nobody reads (a stalled log sink)")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                        help="passed on to edge-ner serve (last)")
    args = parser.parse_args(argv)
    folder = Path(args.artifact)
    texts = sentence_texts([s.words for s in read_conll(Path(args.test_file))])
    levels = [int(c) for c in args.concurrency.split(",")]
    reference = in_process(folder, texts, args.threads)
    console.print(f"in-process: batch-1 p50 {reference['batch1_p50_ms']:.2f} ms, batched "
                  f"{reference['batched_sps']:.0f} sentences/s")
    rows = []
    exit_codes: dict[str, int] = {}
    for mode, wait_ms in (("micro-batching", args.wait_ms), ("off", 0.0)):
        process = start_server(folder, args.port, args.threads, wait_ms, args.server_args,
                               args.unread_stderr)
        try:
            asyncio.run(load(args.port, texts, 4, 200))  # warm-up
            for concurrency in levels:
                before = scrape(args.port)
                result = asyncio.run(load(args.port, texts, concurrency, args.requests))
                after = scrape(args.port)
                delta = {k: after[k] - before.get(k, 0.0) for k in after}
                calls = delta["edge_ner_model_call_seconds_count"]
                rows.append({"mode": mode, "concurrency": concurrency, **result,
                             "model_calls": calls,
                             "requests_per_call": delta["edge_ner_batch_requests_sum"] / calls,
                             "model_share": delta["edge_ner_model_call_seconds_sum"]
                             / result["seconds"],
                             "log_lines_dropped": delta.get(
                                 "edge_ner_log_records_dropped_total", 0.0)})
                console.print(f"{mode}, {concurrency} clients: "
                              f"{result['requests_per_s']:.0f} requests/s")
        finally:
            process.send_signal(signal.SIGTERM)
            exit_codes[mode] = process.wait(timeout=60)

    table = Table(title=f"edge-ner serve {folder.name}, {args.threads} model threads, "
                        f"{args.requests} requests a level, one sentence each")
    for column in ("batching", "clients", "requests/s", "p50 ms", "p99 ms", "errors",
                   "model calls", "requests/call", "model busy", "log lines dropped"):
        table.add_column(column, justify="left" if column == "batching" else "right")
    for r in rows:
        table.add_row(r["mode"], str(r["concurrency"]), f"{r['requests_per_s']:.0f}",
                      f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", str(r["errors"]),
                      f"{r['model_calls']:.0f}", f"{r['requests_per_call']:.1f}",
                      f"{100 * r['model_share']:.0f}%", f"{r['log_lines_dropped']:.0f}")
    print_wide(table, 140)
    console.print("server exit codes on SIGTERM: " + ", ".join(
        f"{mode} {code}" for mode, code in exit_codes.items()))
    console.print(f"in-process, same artifact: batch-1 p50 {reference['batch1_p50_ms']:.2f} "
                  f"ms; {reference['batched_sps']:.0f} sentences/s batched")
    print(json.dumps({"in_process": reference, "levels": rows, "exit_codes": exit_codes}))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
