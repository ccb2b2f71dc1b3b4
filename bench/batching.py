"""What the runtime's token budget costs and buys on this machine: an artifact's batched
throughput over a whole test split and its peak memory, at several budgets of padded
tokens per model call.

    python -m bench.batching runs/conll2003/quantized/L3-ort-int8-dynamic \
        --budgets 512,1024,2048,4096,8192

Each budget runs in a fresh process (ONNX Runtime's arena keeps the largest call's
activations, so a peak read after a larger budget would be that budget's), one after
another, each `--rounds` times over the split; the budgets' order is reversed on every
other round so that drift falls on all alike. The model calls are timed apart from the
work around them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from rich.table import Table

from bench.floor import model_shape
from bench.measure import TimedBackend, isolated, peak_rss_mb, sentence_texts
from edgener.predictor import open_predictor
from edgener.runtime.conll import read_conll
from edgener.runtime.console import console, print_wide, run_cli


def batched_pass(folder: Path, texts: list[str], budget: int, threads: int) -> dict:
    """One pass over `texts` in one call at `budget` (in the calling process)."""
    predictor = open_predictor(folder, threads, max_batch_tokens=budget)
    predictor.predict_batch(texts[:200])  # warm-up
    timed = TimedBackend(predictor.backend, model_shape(folder))
    predictor.backend = timed
    tick = time.perf_counter()
    predictor.predict_batch(texts)
    seconds = time.perf_counter() - tick
    return {"seconds": seconds, "model_s": timed.seconds, "calls": timed.calls,
            "padded_tokens": timed.padded_tokens, "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batching",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="an artifact folder")
    parser.add_argument("--budgets", default="512,1024,2048,4096,8192",
                        help="padded tokens per model call, comma-separated")
    parser.add_argument("--test-file", default="../shared/data/conll2003/test.txt",
                        help="CoNLL file whose sentences are tagged")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    folder = Path(args.artifact)
    budgets = [int(b) for b in args.budgets.split(",")]
    texts = sentence_texts([s.words for s in read_conll(Path(args.test_file))])
    runs: dict[int, list[dict]] = {budget: [] for budget in budgets}
    # No spinner while a pass runs: its redraws would preempt the pass's threads.
    for round_index in range(args.rounds):
        for budget in budgets if round_index % 2 == 0 else budgets[::-1]:
            runs[budget].append(isolated(batched_pass, folder, texts, budget, args.threads))
            console.print(f"round {round_index + 1}/{args.rounds}, {budget} tokens a call: "
                          f"{runs[budget][-1]['model_s']:.2f} s in the model")

    table = Table(title=f"{folder.name}: {len(texts)} texts in one call, {args.threads} "
                        f"threads, median of {args.rounds} rounds")
    for column in ("tokens/call", "calls", "padded tokens", "sent/s", "model s", "text ms",
                   "peak RSS MB"):
        table.add_column(column, justify="right")
    for budget, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        model = statistics.median(r["model_s"] for r in results)
        table.add_row(str(budget), str(results[0]["calls"]), str(results[0]["padded_tokens"]),
                      f"{len(texts) / seconds:.0f}", f"{model:.2f}",
                      f"{1000 * (seconds - model) / len(texts):.3f}",
                      f"{max(r['peak_rss_mb'] for r in results):.0f}")
    print_wide(table, 110)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
