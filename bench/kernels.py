"""How near each artifact's own matrix kernels come to its compute floor at batch 1.

The report's floor is a model call's FLOPs over the machine's peak GEMM throughput. Here
each artifact's backend runs one median-length test sentence and only the time spent in
its matrix kernels is kept, beside the same floor. Kernels alone over 3x the floor mean
no runtime around them can bring the artifact within 3x; kernels near the floor with a
latency far from it mean the rest (tokenisation, operator dispatch) is what to cut.

    python -m bench.kernels runs/conll2003/teacher runs/conll2003/quantized/L3-inc-int8

What counts as the matrix kernels, per backend (each a part of the floor's FLOPs, so the
ratio errs low): PyTorch, the model's nn.Linear layers run one after another through
F.linear, the addmm eager calls; ONNX Runtime, its profiler's node times of the matrix
operators (MatMul and its integer and fused forms, Gemm, Attention) in a call;
neural-compressor, torch's profiler's self time of oneDNN's INT8 linear in a compiled
call on one row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from bench.floor import flops, gemm_gflops, model_shape
from bench.measure import evenly_spaced, sentence_texts, source_model_folder, token_count
from edgener.predictor import MODEL_FILES
from edgener.runtime.artifacts import ArtifactError
from edgener.runtime.backend import MODEL_INPUTS
from edgener.runtime.console import console, print_wide
from edgener.runtime.encoding import Encoder
from edgener.runtime.predictor import artifact_encoder, read_artifact_manifest
from edgener.training.datasets import DATA_DIR_ENV, load_dataset
from edgener.training.stage import run_stage

ORT_MATRIX_OPS = frozenset({
    "MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "QLinearMatMul", "Attention", "QAttention"})
INC_MATRIX_KERNEL = "onednn::qlinear_pointwise"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", help="artifact folders (teacher, student or "
                        "quantized) of one run")
    parser.add_argument("--tokens", type=int, default=None, help="model positions of the "
                        "sentence; default: the median of the report's latency sentences")
    parser.add_argument("--dataset", default="conll2003")
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV))
    parser.add_argument("--sentences", type=int, default=200,
                        help="test sentences spread over the split, as the report times")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per artifact")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    folders = [Path(folder) for folder in args.artifacts]
    manifests = [read_artifact_manifest(folder) for folder in folders]
    texts = None
    if args.tokens is None:
        test = [s.words for s in load_dataset(args.dataset, args.data_dir).split("test")]
        texts = sentence_texts([test[i] for i in evenly_spaced(args.sentences, len(test))])
    peak = gemm_gflops(args.threads)
    rows = []
    with console.status("timing kernels") as status:
        for folder, manifest in zip(folders, manifests, strict=True):
            status.update(f"{folder}")
            encoder, _ = artifact_encoder(folder, manifest)
            tokens = args.tokens or median_tokens(encoder, texts)
            rows.append(kernel_row(folder, manifest, encoder, tokens, peak, args.calls,
                                   args.threads))
    print_rows(rows, peak, args.threads)
    return 0


def median_tokens(encoder: Encoder, texts: list[str]) -> int:
    return round(statistics.median(token_count(encoder, text) for text in texts))


def kernel_row(folder: Path, manifest: dict, encoder: Encoder, tokens: int, peak: dict,
               calls: int, threads: int) -> dict:
    batch = sentence_batch(encoder, tokens)
    if manifest["stage"] in ("teacher", "student"):
        backend, precision, model_folder = "pytorch", "fp32", folder
        kernel_ms = torch_linear_ms(folder, tokens, calls)
    else:
        backend, precision = manifest["backend"], manifest["precision"]
        # A quantized artifact sits in runs/<run>/quantized/.
        model_folder = source_model_folder(folder.resolve().parent.parent,
                                           manifest["source_name"])
        path = folder / MODEL_FILES[backend]
        if backend == "onnxruntime":
            kernel_ms = ort_matrix_ms(path, batch, calls, threads)
        elif backend == "neural-compressor":
            kernel_ms = inc_matrix_ms(path, batch, calls, threads)
        else:
            raise ArtifactError(f"{folder}: a {backend} engine runs on a GPU; this measures "
                                "CPU kernels")
    floor_ms = flops(model_shape(model_folder), tokens) / (peak[precision] * 1e6)
    return {"name": folder.name, "backend": backend, "precision": precision, "tokens": tokens,
            "kernel_ms": kernel_ms, "floor_ms": floor_ms, "kernel_x_floor": kernel_ms / floor_ms}


def sentence_batch(encoder: Encoder, tokens: int) -> dict[str, np.ndarray]:
    """One row of `tokens` positions: [CLS], a word repeated, [SEP] (kernel time depends on
    the shape, not on which ids fill it)."""
    word_id = encoder.subwords(["the"])[0][0]
    ids = [encoder.cls_id, *[word_id] * (tokens - 2), encoder.sep_id]
    window = {"input_ids": np.array(ids), "attention_mask": np.ones(tokens, dtype=np.int64),
              "token_type_ids": np.zeros(tokens, dtype=np.int64)}
    return {name: window[name][None].astype(np.int64) for name in MODEL_INPUTS}


def median_ms(call: Callable[[], object], calls: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        tick = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - tick))
    return float(np.median(times))


def linear_layers(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """A model's nn.Linear layers in registration order (a BERT's execution order)."""
    return [module for module in model.modules() if isinstance(module, torch.nn.Linear)]


def torch_linear_ms(folder: Path, tokens: int, calls: int) -> float:
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    layers = linear_layers(model)
    inputs = [torch.randn(tokens, layer.in_features) for layer in layers]

    def run() -> None:
        for x, layer in zip(inputs, layers, strict=True):
            torch.nn.functional.linear(x, layer.weight, layer.bias)

    with torch.inference_mode():
        return median_ms(run, calls)


def ort_matrix_ms(path: Path, batch: dict[str, np.ndarray], calls: int, threads: int,
                  warmup: int = 20) -> float:
    """Median over calls of the summed node times of ONNX Runtime's matrix operators."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {i.name: batch[i.name] for i in session.get_inputs()}
        for _ in range(warmup + calls):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return float(np.median(matrix_ms_per_run(events)[warmup:]))


def matrix_ms_per_run(events: list[dict]) -> list[float]:
    """From an ONNX Runtime profile: each run's summed node time of the matrix operators."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    totals = [0.0] * len(runs)
    starts = [start for start, _ in runs]
    for event in events:
        if (event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
                and event.get("args", {}).get("op_name") in ORT_MATRIX_OPS):
            index = int(np.searchsorted(starts, event["ts"], side="right")) - 1
            if index >= 0 and event["ts"] <= runs[index][1]:
                totals[index] += event["dur"] / 1000
    return totals


def inc_matrix_ms(path: Path, batch: dict[str, np.ndarray], calls: int, threads: int) -> float:
    """Per call, the self time of oneDNN's INT8 linear in the compiled graph, on one row
    (compiled for that size, unlike the runtime, which pads batch 1 to two rows)."""
    from edgener.backends.torch_graph import IncBackend

    backend = IncBackend(path, threads)
    inputs = [torch.from_numpy(batch[name]) for name in MODEL_INPUTS]
    for _ in range(20):
        backend.forward(inputs)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            backend.forward(inputs)
    kernel_us = sum(e.self_cpu_time_total for e in prof.key_averages()
                    if e.key == INC_MATRIX_KERNEL)
    return kernel_us / 1000 / calls


def print_rows(rows: list[dict], peak: dict, threads: int) -> None:
    table = Table(title=f"matrix kernels of one batch-1 call against the compute floor "
                  f"(peak GEMM: FP32 {peak['fp32']:.0f} GFLOP/s, INT8 {peak['int8']:.0f} "
                  f"GOP/s; {threads} threads)")
    for column in ("artifact", "backend", "prec.", "tokens", "kernels ms", "floor ms",
                   "kernels x floor"):
        table.add_column(column, justify="left" if column in ("artifact", "backend") else
                         "right", no_wrap=True)
    for r in rows:
        table.add_row(r["name"], r["backend"], r["precision"], str(r["tokens"]),
                      f"{r['kernel_ms']:.3f}", f"{r['floor_ms']:.3f}",
                      f"{r['kernel_x_floor']:.1f}")
    print_wide(table, 120)


if __name__ == "__main__":
    sys.exit(run_stage(main))
