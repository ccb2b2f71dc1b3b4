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
from edgener.decoding import constrained_decode
from edgener.encoding import Encoder, eval_batches, gather_word_logits, pad_arrays
from edgener.metrics import entity_scores

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
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
                batch_size: int) -> list[np.ndarray]:
    """Word-level logits for each sentence, every word predicted by the window owning it."""
    windows = encoder.encode_all(sentences)

    def window_logits():
        for indices in eval_batches([len(w.input_ids) for w in windows], batch_size):
            logits = backend(pad_arrays([windows[i] for i in indices], encoder.pad_id))
            for row, index in enumerate(indices):
                yield index, logits[row, : len(windows[index].input_ids)]

    return gather_word_logits(windows, window_logits(), [len(s) for s in sentences])


def score(backend: Backend, encoder: Encoder, words: Sequence[Sequence[str]],
          gold_tags: Sequence[Sequence[str]], labels: Sequence[str], batch_size: int) -> dict:
    """Entity-level scores of a backend, with constrained decoding."""
    predicted = [constrained_decode(logits, labels)
                 for logits in word_logits(backend, encoder, words, batch_size)]
    return entity_scores(gold_tags, predicted)
