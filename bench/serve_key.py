"""What the API key check costs `edge-ner serve`: requests/s at 32 clients of two servers of
the same artifact, one open and one with a key (every request carrying it), in alternating
rounds so that the VM's drift falls on both alike.

    python -m bench.serve_key runs/conll2003/quantized/L3-ort-int8-dynamic --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
from pathlib import Path

from bench.measure import sentence_texts
from bench.serve import load, start_server
from edgener.runtime.conll import read_conll
from edgener.runtime.console import console, run_cli

KEY = "bench-key-" + "x" * 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_key",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--test-file", default="../shared/data/conll2003/test.txt")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    texts = sentence_texts([s.words for s in read_conll(Path(args.test_file))])
    os.environ["EDGE_NER_API_KEY"] = KEY  # read by the keyed server only
    keyed = start_server(Path(args.artifact), 8767, args.threads, 5.0,
                         ["--metrics-without-key"])
    del os.environ["EDGE_NER_API_KEY"]
    open_server = start_server(Path(args.artifact), 8766, args.threads, 5.0, [])
    header = f"Authorization: Bearer {KEY}\r\n".encode()
    setups = {"open": (8766, b""), "with key": (8767, header)}
    rates: dict[str, list[float]] = {name: [] for name in setups}
    try:
        for port, headers in setups.values():  # warm-up
            asyncio.run(load(port, texts, 4, 200, headers))
        for round_index in range(args.rounds):
            order = list(setups) if round_index % 2 == 0 else list(setups)[::-1]
            for name in order:
                port, headers = setups[name]
                result = asyncio.run(load(port, texts, args.clients, args.requests, headers))
                if result["errors"]:
                    raise SystemExit(f"{name}: {result['errors']} requests failed")
                rates[name].append(result["requests_per_s"])
            console.print(f"round {round_index + 1}: " + ", ".join(
                f"{name} {rates[name][-1]:.0f}" for name in setups) + " requests/s")
    finally:
        for process in (keyed, open_server):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    ratios = [k / o for k, o in zip(rates["with key"], rates["open"], strict=True)]
    console.print(f"{args.clients} clients, {args.requests} requests a round: open "
                  f"{statistics.median(rates['open']):.0f}, with key "
                  f"{statistics.median(rates['with key']):.0f} requests/s (medians); with "
                  f"key / open per round: {', '.join(f'{r:.3f}' for r in ratios)}; median "
                  f"{statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
