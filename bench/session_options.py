"""Which ONNX Runtime session options pay on this machine, for one ONNX artifact: session
creation time (the part of a cold start ONNX Runtime owns) and batch-1 latency, raw text
to entities, with each option changed alone against the runtime's defaults.

    python -m bench.session_options runs/conll2003/quantized/L3-ort-int8-dynamic

Variants: thread spinning off; graph optimization at basic and extended instead of all;
and a graph optimized once and saved, loaded with optimization off (a faster start, if
the saved graph is as fast). Latency rounds are interleaved over the variants, in one
process (each round starting one variant later), and each variant's p50 is given as a
ratio to the defaults' in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.measure import evenly_spaced, rotating_p50s, sentence_texts
from edgener.predictor import open_predictor
from edgener.runtime.backend import OnnxBackend
from edgener.runtime.conll import read_conll
from edgener.runtime.console import print_wide, run_cli


def backend_factory(path: Path, threads: int, level: str = "ORT_ENABLE_ALL",
                    spinning: bool = True, save_to: Path | None = None
                    ) -> Callable[[], OnnxBackend]:
    import onnxruntime as ort

    def make() -> OnnxBackend:
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if save_to is not None:
            options.optimized_model_filepath = str(save_to)
        return OnnxBackend(path, threads, options)

    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.session_options",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="an ONNX artifact folder")
    parser.add_argument("--test-file", default="../shared/data/conll2003/test.txt",
                        help="CoNLL file whose sentences are timed")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--starts", type=int, default=7, help="session creations timed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    folder = Path(args.artifact)
    model = folder / "model.onnx"
    words = [s.words for s in read_conll(args.test_file)]
    texts = sentence_texts([words[i] for i in evenly_spaced(args.sentences, len(words))])

    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / "optimized.onnx"
        backend_factory(model, args.threads, save_to=saved)()
        variants = {
            "defaults (all, spinning)": backend_factory(model, args.threads),
            "spinning off": backend_factory(model, args.threads, spinning=False),
            "optimization basic": backend_factory(model, args.threads, "ORT_ENABLE_BASIC"),
            "optimization extended": backend_factory(model, args.threads,
                                                     "ORT_ENABLE_EXTENDED"),
            "saved optimized graph": backend_factory(saved, args.threads, "ORT_DISABLE_ALL"),
        }
        creation = {name: creation_ms(make, args.starts) for name, make in variants.items()}
        predictors = {name: open_predictor(folder, args.threads, backend=make())
                      for name, make in variants.items()}
        p50s = rotating_p50s(predictors, texts, args.rounds)
    print_table(creation, p50s, folder.name, len(texts), args.threads)
    return 0


def creation_ms(make: Callable, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        make()
        times.append(1000 * (time.perf_counter() - tick))
    return statistics.median(times)


def print_table(creation: dict, p50s: dict, name: str, sentences: int, threads: int) -> None:
    from rich.table import Table

    table = Table(title=f"ONNX Runtime session options, {name}: {sentences} test sentences "
                  f"at batch 1, {threads} threads, rounds interleaved")
    for column in ("variant", "session ms", "p50 ms (median of rounds)", "p50 / defaults"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    reference = next(iter(p50s.values()))
    for variant, rounds in p50s.items():
        ratio = statistics.median(a / b for a, b in zip(rounds, reference, strict=True))
        table.add_row(variant, f"{creation[variant]:.0f}", f"{statistics.median(rounds):.3f}",
                      f"{ratio:.3f}")
    print_wide(table, 110)


if __name__ == "__main__":
    sys.exit(run_cli(main))
