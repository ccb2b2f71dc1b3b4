"""What the report measures for one artifact, in a process of its own (so that peak memory
is the artifact's, and no two artifacts share a warmed-up library; only the peer that
anchors the latency ratios joins it, after the memory peak is read); the compute floor
its timings are set against is bench.floor's.

Latency is wall time from a raw text string to its entities (word splitting, subword
tokenisation, model, decoding), one sentence at a time, after warm-up, with a fixed
thread count; each latency is measured over several rounds so its spread shows.

Throughput is the whole test split twice over, in alternating rounds: one text a call, and
all texts in one call, batched as the runtime batches (every window sorted by length, cut
into model calls by a budget of padded tokens). The model calls of the batched pass are
timed apart from the work around them, and their FLOPs, padding included, give its floor.

Nothing here imports torch or transformers at module level: a row of an ONNX Runtime
artifact is measured in a process that never loads them, so its peak memory is what the
artifact costs on a box that ships only the lean runtime. The torch-only pieces (the
PyTorch peers, the FP32 GEMM) import torch inside the functions that need it.
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from bench.floor import flops, model_shape
from edgener.runtime.metrics import entity_scores
from edgener.runtime.text import split_words

if TYPE_CHECKING:  # annotations only: importing these at run time may pull in torch
    import torch

    from edgener.predictor import Predictor
    from edgener.runtime.encoding import Encoder

# How each candidate is loaded: a quantized artifact folder as its manifest says, a
# Hugging Face folder (teacher, student) in PyTorch at a precision on a device, or a peer
# built from the teacher the way a user would without this toolkit.
ARTIFACT, PYTORCH, TORCH_DYNAMIC_INT8, ORT_DYNAMIC_INT8 = "artifact", "pytorch", \
    "torch-dynamic-int8", "ort-dynamic-int8"


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str  # ARTIFACT or a peer kind
    folder: Path  # the artifact folder; for peers, the teacher's
    backend: str
    precision: str
    is_peer: bool
    model_folder: Path  # the Hugging Face folder whose config gives the shape (FLOPs)
    size_mb: float | None  # None: measured from the loaded model (PYTORCH rows)
    source: str  # the model it was made from (teacher or a student's name)
    onnx_path: Path | None = None  # ORT_DYNAMIC_INT8: the peer's quantized model
    device: str = "cpu"  # "cpu" or "cuda": where the model runs


@dataclass(frozen=True)
class Settings:
    threads: int
    batch_tokens: int  # the runtime's budget of padded tokens per model call
    warmup: int
    rounds: int
    throughput_rounds: int
    gemm_gflops: dict  # precision -> measured GFLOP/s (GOP/s for int8)


class TimedBackend:
    """A backend that adds up its calls' wall time, padded positions and FLOPs."""

    def __init__(self, backend, shape: dict):
        self.backend, self.shape = backend, shape
        self.reset()

    def reset(self) -> None:
        self.seconds, self.calls, self.padded_tokens, self.flops = 0.0, 0, 0, 0.0

    def __call__(self, batch: dict) -> np.ndarray:
        tick = time.perf_counter()
        logits = self.backend(batch)
        self.seconds += time.perf_counter() - tick
        rows, length = batch["input_ids"].shape
        self.calls += 1
        self.padded_tokens += rows * length
        self.flops += rows * flops(self.shape, length)
        return logits


def load(candidate: Candidate, threads: int) -> Predictor:
    from edgener.predictor import open_predictor

    if candidate.backend != "onnxruntime":
        prepare_torch(threads)
    if candidate.kind == ARTIFACT:
        return open_predictor(candidate.folder, threads)
    if candidate.kind == PYTORCH:
        from edgener.backends.torch_eager import hf_backend

        return open_predictor(candidate.folder, threads, backend=hf_backend(
            candidate.folder, threads, candidate.device, candidate.precision))
    if candidate.kind == TORCH_DYNAMIC_INT8:
        from edgener.backends.torch_eager import TorchBackend

        return open_predictor(candidate.folder, threads,
                                     backend=TorchBackend(torch_dynamic_int8(candidate.folder)))
    if candidate.kind == ORT_DYNAMIC_INT8:
        from edgener.runtime.backend import OnnxBackend

        return open_predictor(candidate.folder, threads,
                                     backend=OnnxBackend(candidate.onnx_path, threads))
    raise ValueError(f"unknown candidate kind {candidate.kind!r}")


def prepare_torch(threads: int) -> None:
    """Quiet transformers and torch as the stages do, and fix torch's thread count, for a
    row that runs on PyTorch. Only such a row calls this: quieting imports transformers
    (and this, torch), which an ONNX Runtime row's process must never load."""
    import torch

    from edgener.training.stage import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(threads)


def torch_dynamic_int8(folder: Path) -> torch.nn.Module:
    """The teacher with every nn.Linear dynamically quantized by torch.ao (INT8 weights,
    activations quantized per call): PyTorch's one-line INT8."""
    import torch
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    # torch.ao's eager quantization warns that it is deprecated (torch 2.13 still ships it,
    # and it is still what users reach for); the peer is that API as it is.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                      dtype=torch.qint8)


def module_mb(model: torch.nn.Module) -> float:
    """The bytes of a model's parameters and buffers, in its own dtypes."""
    tensors = [*model.parameters(), *model.buffers()]
    return round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 2)


def device_name(device: str) -> str:
    """The CPU model or the GPU's name."""
    if device == "cpu":
        from edgener.training.publish import cpu_model

        return cpu_model()
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def state_dict_mb(model: torch.nn.Module) -> float:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size / 2**20


T = TypeVar("T")


def isolated(function: Callable[..., T], *args: Any) -> T:
    """function(*args) in a fresh process: each artifact's memory peak is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet_child) as pool:
        return pool.submit(function, *args).result()


def _quiet_child() -> None:
    # ONNX Runtime's quantizer logs on the root logger. Rows that run on PyTorch quiet
    # transformers and torch when they load them (prepare_torch): doing it here would
    # import both into every row's process, the lean ones' too.
    logging.getLogger().setLevel(logging.ERROR)


def measure(candidate: Candidate, settings: Settings, test_words: list[list[str]],
            test_tags: list[list[str]], latency_texts: list[str],
            anchor: Candidate | None = None, test_documents: list[int] | None = None
            ) -> dict:
    """Every number of one report row (in the calling process: run it in a fresh one).

    With an `anchor`, its latency rounds alternate with this artifact's in this process,
    and the row carries the anchor's p50 over this artifact's, round by round: a ratio
    that drift on the machine shifts alike on both sides. The anchor is loaded only after
    the memory peak is read, so the peak stays this artifact's own. An artifact trained
    with context tags the test split in its documents (`test_documents`), and the row says
    what the context costs and gives (`context`)."""
    started = time.perf_counter()
    predictor = load(candidate, settings.threads)
    predictor.max_batch_tokens = settings.batch_tokens
    load_s = time.perf_counter() - started

    predicted = [tags for tags, _ in predictor.tag(test_words, test_documents)]
    scores = entity_scores(test_tags, predicted)
    context = context_cost(predictor, test_words, test_tags, test_documents,
                           settings.throughput_rounds) \
        if predictor.encoder.reads_context and test_documents is not None else None

    shape = model_shape(candidate.model_folder)
    # The measured matrix throughput is the CPU's: a GPU row has no floor here.
    gflops = settings.gemm_gflops.get(candidate.precision) if candidate.device == "cpu" \
        else None
    batching = throughput(predictor, shape, sentence_texts(test_words),
                          settings.throughput_rounds, gflops)
    peak_rss = peak_rss_mb()

    reference = load(anchor, settings.threads) if anchor else None
    rounds, anchor_p50 = [], []
    for timed in (p for p in (reference, predictor) if p is not None):
        latency_round(timed, latency_texts[: settings.warmup])
    for _ in range(settings.rounds):
        if reference:
            anchor_p50.append(float(np.percentile(latency_round(reference, latency_texts), 50)))
        rounds.append(latency_round(predictor, latency_texts))
    every = np.concatenate(rounds)
    round_p50 = [float(np.percentile(r, 50)) for r in rounds]

    tokens = [token_count(predictor.encoder, text) for text in latency_texts]
    floors = [flops(shape, n) / (gflops * 1e6) for n in tokens] if gflops else None
    return {
        "name": candidate.name,
        "backend": candidate.backend,
        "precision": candidate.precision,
        "is_peer": candidate.is_peer,
        "device_type": candidate.device,
        "device": device_name(candidate.device),
        "params": shape["params"],
        "layers": shape["layers"],
        "hidden_size": shape["hidden_size"],
        "test_f1": scores["f1"],
        "test_per_type": {k: v["f1"] for k, v in scores["per_type"].items()},
        "context": context,
        "p50_ms": float(np.percentile(every, 50)),
        "p90_ms": float(np.percentile(every, 90)),
        "p99_ms": float(np.percentile(every, 99)),
        "p50_rounds_ms": round_p50,
        "p50_spread_ms": max(round_p50) - min(round_p50),
        "latency_samples": int(every.size),
        "anchor": anchor.name if anchor else None,
        "anchor_p50_rounds_ms": anchor_p50,
        "vs_anchor_rounds": [a / o for a, o in zip(anchor_p50, round_p50, strict=True)]
        if anchor else None,
        **batching,
        "batch_tokens": settings.batch_tokens,
        "size_mb": candidate.size_mb if candidate.size_mb is not None
        else module_mb(predictor.backend.model),
        "peak_rss_mb": peak_rss,
        "torch_cuda_peak_mb": torch_cuda_peak_mb(candidate.device),
        "median_tokens": statistics.median(tokens),
        "floor_ms": statistics.median(floors) if floors else None,
        "load_s": load_s,
        # Read last, after the anchor ran too: a lean row's process stayed lean throughout.
        "imports_torch": "torch" in sys.modules,
        "imports_transformers": "transformers" in sys.modules,
    }


def throughput(predictor: Predictor, shape: dict, texts: Sequence[str], rounds: int,
               gflops: float | None) -> dict:
    """Sentences/s over `texts` one a call and all in one call (the runtime's batching),
    in alternating rounds; the batched pass's model time, per-text time and floor; and how
    many texts got other entities batched than alone (types and spans, or a score moved
    by more than 1e-3)."""
    timed = TimedBackend(predictor.backend, shape)
    predictor.backend = timed
    alone_s, batched_s, model_s = [], [], []
    try:
        for _ in range(rounds):
            tick = time.perf_counter()
            alone = [predictor.predict(text) for text in texts]
            alone_s.append(time.perf_counter() - tick)
            timed.reset()
            tick = time.perf_counter()
            batched = predictor.predict_batch(texts)
            batched_s.append(time.perf_counter() - tick)
            model_s.append(timed.seconds)
    finally:
        predictor.backend = timed.backend
    differing = sum(not same_entities(a, b) for a, b in zip(alone, batched, strict=True))
    batched_total, model = statistics.median(batched_s), statistics.median(model_s)
    floor_s = timed.flops / (gflops * 1e9) if gflops else None
    return {
        "batch1_sps": len(texts) / statistics.median(alone_s),
        "batched_sps": len(texts) / batched_total,
        # Paired: each round's two passes ran back to back.
        "batched_vs_batch1": statistics.median(a / b for a, b in zip(alone_s, batched_s,
                                                                        strict=True)),
        "batched_model_s": model,
        "batched_text_ms": 1000 * (batched_total - model) / len(texts),
        "batched_calls": timed.calls,
        "batched_padded_tokens": timed.padded_tokens,
        "batched_floor_s": floor_s,
        "batched_floor_ratio": model / floor_s if floor_s else None,
        "throughput_sentences": len(texts),
        "batched_differs": differing,
    }


def context_cost(predictor: Predictor, words: list[list[str]], tags: list[list[str]],
                 documents: list[int], rounds: int) -> dict:
    """Test F1 and sentences/s of the split tagged in its documents and each sentence alone
    (alternating rounds, the speed ratio paired), and the tokens each way reads."""
    in_context_s, alone_s = [], []
    for _ in range(rounds):
        tick = time.perf_counter()
        in_context = [t for t, _ in predictor.tag(words, documents)]
        in_context_s.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        alone = [t for t, _ in predictor.tag(words)]
        alone_s.append(time.perf_counter() - tick)

    def tokens(with_documents: list[int] | None) -> float:
        windows = predictor.encoder.encode_all(words, documents=with_documents)
        return sum(len(w.input_ids) for w in windows) / len(words)

    return {"context_tokens": predictor.encoder.context_tokens,
            "pack_documents": predictor.encoder.pack_documents,
            "f1_in_context": entity_scores(tags, in_context)["f1"],
            "f1_alone": entity_scores(tags, alone)["f1"],
            "sps_in_context": len(words) / statistics.median(in_context_s),
            "sps_alone": len(words) / statistics.median(alone_s),
            "in_context_vs_alone": statistics.median(  # paired: speed in context over alone
                a / c for a, c in zip(alone_s, in_context_s, strict=True)),
            "tokens_in_context": tokens(documents), "tokens_alone": tokens(None)}


def same_entities(alone: Sequence, batched: Sequence, tolerance: float = 1e-3) -> bool:
    return len(alone) == len(batched) and all(
        (a.type, a.start, a.end) == (b.type, b.start, b.end)
        and abs(a.score - b.score) <= tolerance for a, b in zip(alone, batched, strict=True))


def latency_round(predictor: Predictor, texts: Sequence[str]) -> list[float]:
    """Milliseconds from raw text to entities for each text, one call at a time."""
    times = []
    for text in texts:
        tick = time.perf_counter()
        predictor.predict(text)
        times.append(1000 * (time.perf_counter() - tick))
    return times


def rotating_p50s(predictors: dict[str, Predictor], texts: Sequence[str], rounds: int,
                  warmup: int = 20) -> dict[str, list[float]]:
    """Each predictor's batch-1 p50 (ms) per round, the predictors timed in turn within a
    round so that the machine's drift falls on all alike; each round starts one later, so
    none always runs first, and each is warmed up again before its turn."""
    p50s: dict[str, list[float]] = {name: [] for name in predictors}
    names = list(predictors)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            latency_round(predictors[name], texts[:warmup])
            p50s[name].append(statistics.median(latency_round(predictors[name], texts)))
    return p50s


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the running program;
    getrusage's ru_maxrss survives exec, so a spawned child would report its parent's peak
    whenever that was higher."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_cuda_peak_mb(device: str) -> float | None:
    """The most GPU memory PyTorch's allocator held at once in this process (TensorRT's
    own engine and activation memory is not in it); None for a CPU row."""
    if device == "cpu":
        return None
    import torch

    return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20


def token_count(encoder: Encoder, text: str) -> int:
    """Model positions one text occupies, over all its windows ([CLS] and [SEP] included)."""
    windows = encoder.encode(0, [w.text for w in split_words(text)])
    return sum(len(w.input_ids) for w in windows)


def source_model_folder(run_dir: Path, source: str) -> Path:
    """The Hugging Face folder of the model a quantized artifact was made from (its
    manifest's source_name): the run's teacher or one of its students."""
    return run_dir / "teacher" if source == "teacher" else run_dir / "students" / source


def evenly_spaced(count: int, total: int) -> list[int]:
    """`count` indices spread over range(total): a sample with the split's length mix."""
    if count >= total:
        return list(range(total))
    return [round(k * (total - 1) / max(count - 1, 1)) for k in range(count)]


def sentence_texts(sentences: Sequence[Sequence[str]]) -> list[str]:
    """Raw text of tokenised sentences (words joined by spaces), as a user would pass."""
    return [" ".join(words) for words in sentences]
