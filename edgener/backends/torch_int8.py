"""INT8 matrix products in plain PyTorch (torch._int_mm), for a GPU without TensorRT.

Every nn.Linear of the encoder becomes a W8A8 layer: weights int8 symmetric per output
channel, quantized once; activations int8 symmetric per token, quantized at each call from
that token's own absolute maximum. The int32 product is scaled back by the token's scale
times the channel's, in FP32 (an int32 sum of 3072 products of 127 overflows FP16), and the
rest of the model (embeddings, LayerNorm, GELU, softmax) runs in the model's dtype, FP16 on
a GPU. Per-token scales make a token's result independent of the rest of its batch.

The classifier stays in the model's dtype: its few outputs (9 CoNLL labels) miss the
multiple of 8 that _int_mm's output needs, and it is a tiny share of the work.
"""

from __future__ import annotations

import torch

QMAX = 127
# CUDA's _int_mm needs more than 16 rows, and inner and output sizes in multiples of 8.
# Short batches are padded with zero rows after quantization, so they add no NaN scales.
MIN_ROWS = 17
ALIGN = 8


class Int8Linear(torch.nn.Module):
    """y = x W^T + b with x and W in int8 and the product in int32 (torch._int_mm)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / QMAX
        quantized = torch.round(weight / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
        # [in, out] as the transpose of a contiguous [out, in]: the column-major right
        # operand that cuBLASLt's int8 GEMM takes without a copy.
        self.register_buffer("weight_t", quantized.t())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        scale = rows.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-8) / QMAX
        quantized = torch.round(rows.float() / scale).clamp(-QMAX, QMAX).to(torch.int8)
        count = quantized.shape[0]
        if quantized.is_cuda and count < MIN_ROWS:
            quantized = torch.nn.functional.pad(quantized, (0, 0, 0, MIN_ROWS - count))
        product = torch._int_mm(quantized, self.weight_t)[:count]
        out = product.float() * scale * self.weight_scale
        if self.bias is not None:
            out = out + self.bias.float()
        return out.to(x.dtype).reshape(*shape[:-1], self.out_features)


def quantizable(linear: torch.nn.Linear) -> bool:
    return linear.in_features % ALIGN == 0 and linear.out_features % ALIGN == 0


def quantize_linears(model: torch.nn.Module) -> int:
    """Replace every nn.Linear whose sizes _int_mm accepts with an Int8Linear, in place
    (weights on the layer's device); returns how many were replaced."""
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children()
               if isinstance(child, torch.nn.Linear) and quantizable(child)]
    for parent, name, child in targets:
        setattr(parent, name, Int8Linear(child).to(child.weight.device))
    return len(targets)
