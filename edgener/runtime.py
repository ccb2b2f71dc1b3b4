"""Inference backends behind one signature, and scoring through any of them.

A backend is a callable from a padded batch of model inputs (numpy int64 arrays named
input_ids, attention_mask, token_type_ids) to token logits [batch, tokens, labels]. Every
stage scores a model through the backend that will serve it, with the same windows,
word alignment and constrained decoding, so their F1 numbers compare like for like.

Nothing here imports torch: this is the runtime an edge box installs (numpy, tokenizers,
ONNX Runtime). PyTorch-based backends live in edgener.torch_backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgener.artifacts import ArtifactError
from edgener.decoding import decode_all, softmax
from edgener.encoding import Encoder, gather_word_logits, pad_arrays, token_batches
from edgener.metrics import entity_scores

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Padded positions per model call (rows x the longest row). Measured on the 2-core test
# machine (bench.batching, docs/results.md): tagging CoNLL-2003 test, L3's INT8 artifacts
# ran within noise of their fastest from 512 to 2,048, while ONNX Runtime's arena, which
# keeps the largest call's activations, took peak memory from 156 MB to 240 MB.
BATCH_TOKENS = 512
Backend = Callable[[dict[str, np.ndarray]], np.ndarray]


class OnnxBackend:
    """An ONNX model in ONNX Runtime on the CPU, with a fixed thread count.

    Otherwise ONNX Runtime's defaults hold (every graph optimization, spinning worker
    threads): measured against the alternatives on this project's 2-core machine
    (bench.session_options, docs/results.md), turning spinning off cost 27-58% at batch 1,
    lower optimization levels won nothing, and a saved optimized graph cut session creation
    by at most 40 ms of a ~0.3 s cold start while tying the graph to the CPU it was saved
    on. `options` are for such measurements."""

    def __init__(self, path: str | Path, threads: int | None = None, options=None):
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        options = options or ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoSuchFile,
                ort_errors.Fail) as error:
            raise ArtifactError(f"ONNX Runtime cannot load {path} "
                                f"({str(error).splitlines()[0]})") from error
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: batch[name] for name in self.input_names}
        return self.session.run(None, feed)[0]


def word_logits(backend: Backend, encoder: Encoder, sentences: Sequence[Sequence[str]],
                max_tokens: int = BATCH_TOKENS) -> list[np.ndarray]:
    """Word-level logits for each sentence, every word predicted by the window owning it;
    the windows of all sentences go to the model sorted by length, `max_tokens` padded
    positions a call."""
    windows = encoder.encode_all(sentences)

    def window_logits():
        for indices in token_batches([len(w.input_ids) for w in windows], max_tokens):
            logits = backend(pad_arrays([windows[i] for i in indices], encoder.pad_id))
            for row, index in enumerate(indices):
                yield index, logits[row, : len(windows[index].input_ids)]

    return gather_word_logits(windows, window_logits(), [len(s) for s in sentences])


def score(backend: Backend, encoder: Encoder, words: Sequence[Sequence[str]],
          gold_tags: Sequence[Sequence[str]], labels: Sequence[str],
          max_tokens: int = BATCH_TOKENS) -> dict:
    """Entity-level scores of a backend, with constrained decoding."""
    predicted = [[labels[i] for i in path] for path, _ in
                 decode_all(word_logits(backend, encoder, words, max_tokens), labels)]
    return entity_scores(gold_tags, predicted)


def batch_invariance(backend: Backend, encoder: Encoder, sentences: Sequence[Sequence[str]],
                     max_tokens: int = BATCH_TOKENS, tolerance: float = 1e-3) -> dict:
    """Whether a window's tag probabilities depend on what it is batched with: each window
    alone, then again in planted batches that pad it next to windows of very different
    lengths (longest and shortest alternating, up to `max_tokens` padded positions a
    batch). Invariant: no token's most probable tag changes, and no probability moves by
    more than `tolerance`."""
    windows = encoder.encode_all(sentences)
    alone = [softmax(backend(pad_arrays([w], encoder.pad_id))[0]) for w in windows]
    by_length = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    planted = [by_length[-1 - k // 2] if k % 2 == 0 else by_length[k // 2]
               for k in range(len(windows))]
    batches: list[list[int]] = []
    for index in planted:
        rows = batches[-1] if batches else []
        longest = max([len(windows[i].input_ids) for i in rows + [index]])
        if rows and (len(rows) + 1) * longest <= max_tokens:
            rows.append(index)
        else:
            batches.append([index])
    largest_diff, changed = 0.0, 0
    for rows in batches:
        probabilities = softmax(backend(pad_arrays([windows[i] for i in rows], encoder.pad_id)))
        for row, index in enumerate(rows):
            batched = probabilities[row, : len(windows[index].input_ids)]
            largest_diff = max(largest_diff, float(np.abs(batched - alone[index]).max()))
            changed += int((batched.argmax(-1) != alone[index].argmax(-1)).sum())
    return {"windows": len(windows), "batches": len(batches),
            "largest_batch": max((len(rows) for rows in batches), default=0),
            "max_probability_diff": largest_diff, "argmax_changes": changed,
            "tolerance": tolerance,
            "invariant": changed == 0 and largest_diff <= tolerance}

