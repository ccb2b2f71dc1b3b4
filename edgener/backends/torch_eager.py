"""Hugging Face token classifiers (the teacher and the students) in PyTorch eager mode, on
the CPU or a GPU, at FP32, FP16 or INT8 matrix products; and the plain-signature wrapper
that exported programs share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgener.runtime.artifacts import ArtifactError
from edgener.runtime.backend import MODEL_INPUTS, Backend


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


class TorchBackend:
    """A PyTorch token classifier as a backend (eval mode, no gradients), on `device`."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.model, self.device = model, device

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(batch[k]).to(self.device) for k in MODEL_INPUTS}
        return self.model(**inputs).logits.float().cpu().numpy()


# How a PyTorch model folder can run: FP32 as trained, FP16, or INT8 matrix products
# (edgener.backends.torch_int8) with the rest in FP16 on a GPU and FP32 on a CPU.
PRECISIONS = ("fp32", "fp16", "int8")


def hf_backend(folder: Path, threads: int | None = None, device: str = "cpu",
               precision: str = "fp32") -> Backend:
    """A published Hugging Face folder (teacher or student) in PyTorch eager mode, on
    `device` at `precision` (one of PRECISIONS)."""
    if threads:
        torch.set_num_threads(threads)
    return TorchBackend(hf_model(folder, device, precision), device)


def hf_model(folder: Path, device: str = "cpu", precision: str = "fp32") -> torch.nn.Module:
    from transformers import AutoModelForTokenClassification

    from edgener.backends.torch_int8 import quantize_linears

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    try:
        # FP32 whatever the checkpoint holds: the precision is chosen here, not by the file.
        model = AutoModelForTokenClassification.from_pretrained(
            folder, dtype=torch.float32).eval()
    except (OSError, ValueError) as error:
        raise ArtifactError(f"cannot load the PyTorch model in {folder} "
                            f"({str(error).splitlines()[0]})") from error
    half = precision == "fp16" or (precision == "int8" and torch.device(device).type == "cuda")
    model = model.to(device=device, dtype=torch.float16 if half else torch.float32)
    if precision == "int8":
        quantize_linears(model)
    return model
