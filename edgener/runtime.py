"""Inference backends behind one signature, and scoring through any of them.

A backend is a callable from a padded batch of model inputs (numpy int64 arrays named
input_ids, attention_mask, token_type_ids) to token logits [batch, tokens, labels]. Every
stage scores a model through the backend that will serve it, with the same windows,
word alignment and constrained decoding, so their F1 numbers compare like for like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from edgener.artifacts import ArtifactError
from edgener.decoding import constrained_decode
from edgener.encoding import Encoder, eval_batches, gather_word_logits, pad_arrays
from edgener.metrics import entity_scores

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Backend = Callable[[dict[str, np.ndarray]], np.ndarray]


class TokenLogits(torch.nn.Module):
    """A Hugging Face token classifier with positional inputs and bare logits: the plain
    signature (input_ids, attention_mask, token_type_ids) -> logits that torch.export,
    neural-compressor and TensorRT programs share, free of transformers' output classes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits


def torch_backend(model: torch.nn.Module, device: torch.device | str = "cpu") -> Backend:
    """A PyTorch token classifier as a backend (eval mode, no gradients)."""

    @torch.no_grad()
    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(batch[k]).to(device) for k in MODEL_INPUTS}
        return model(**inputs).logits.float().cpu().numpy()

    return run


class OnnxBackend:
    """An ONNX model in ONNX Runtime on the CPU, with a fixed thread count."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        options = ort.SessionOptions()
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
