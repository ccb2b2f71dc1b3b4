"""PyTorch token classifier -> FP32 ONNX with dynamic batch and sequence axes, and the
parity check that stops the stage when the export does not reproduce PyTorch."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgener.runtime.artifacts import ArtifactError
from edgener.runtime.backend import MODEL_INPUTS, Backend
from edgener.runtime.decoding import constrained_decode
from edgener.runtime.encoding import Encoder
from edgener.runtime.inference import word_logits


class ParityError(ArtifactError):
    """The exported model's logits or tags differ from PyTorch's beyond tolerance."""


def export_onnx(model: torch.nn.Module, path: str | Path, opset: int) -> None:
    """Export with the TorchScript exporter: its graph is the one ONNX Runtime's transformer
    optimizer recognises (attention, layer norm and GELU fusions); eager attention for the
    same reason (SDPA exports to a pattern the fusions miss)."""
    model.config._attn_implementation = "eager"
    model.eval()
    example = {name: torch.ones(2, 8, dtype=torch.long) for name in MODEL_INPUTS}
    axes = {name: {0: "batch", 1: "sequence"} for name in (*MODEL_INPUTS, "logits")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        torch.onnx.export(model, (), str(path), kwargs=example, input_names=list(MODEL_INPUTS),
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          dynamo=False)


@dataclass
class Parity:
    max_abs_diff: float
    sentences: int
    tag_mismatches: int  # sentences whose decoded tags differ

    def ok(self, atol: float) -> bool:
        return self.max_abs_diff <= atol and self.tag_mismatches == 0

    def describe(self) -> str:
        return (f"max |logit difference| {self.max_abs_diff:.2e}, "
                f"{self.tag_mismatches} of {self.sentences} sentences with different tags")


def compare(reference: Backend, candidate: Backend, encoder: Encoder,
            sentences: list[list[str]], labels: list[str], max_tokens: int) -> Parity:
    """Word logits and constrained-decoded tags of two backends over the same sentences."""
    expected = word_logits(reference, encoder, sentences, max_tokens)
    actual = word_logits(candidate, encoder, sentences, max_tokens)
    max_diff, mismatches = 0.0, 0
    for a, b in zip(expected, actual, strict=True):
        if a.size:
            max_diff = max(max_diff, float(np.abs(a - b).max()))
        if constrained_decode(a, labels) != constrained_decode(b, labels):
            mismatches += 1
    return Parity(max_diff, len(sentences), mismatches)
