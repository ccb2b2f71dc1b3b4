"""W8A8 linear layers on torch._int_mm: exact on values the int8 grid holds, per-token
scales, and a whole tiny BERT that keeps its labels. These run on the CPU (torch._int_mm has
a CPU kernel); the CUDA run is the report's GPU INT8 row."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForTokenClassification

from edgener.backends.torch_eager import TorchBackend
from edgener.backends.torch_int8 import Int8Linear, quantize_linears


def grid_linear() -> torch.nn.Linear:
    """A 16 x 8 layer whose weights are whole numbers with 127 as each row's largest
    magnitude: its per-channel scale is exactly 1, so int8 holds it exactly."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 16)
    weight = torch.randint(-100, 100, (16, 8)).float()
    weight[:, 0] = 127
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(torch.arange(16.0))
    return layer


def test_int8_linear_is_exact_on_the_int8_grid():
    layer = grid_linear()
    x = torch.randint(-100, 100, (2, 3, 8)).float()
    x[..., 1] = -127  # every token's largest magnitude: scale 1, exact in int8
    got = Int8Linear(layer)(x)
    assert got.shape == (2, 3, 16) and got.dtype == torch.float32
    # Integer products far below 2^24 are exact in FP32 too.
    torch.testing.assert_close(got, x @ layer.weight.T + layer.bias, rtol=0, atol=0)


def test_each_token_is_quantized_on_its_own_scale():
    layer = Int8Linear(grid_linear())
    small = torch.randn(1, 5, 8)
    huge = 1000 * torch.randn(1, 5, 8)
    alone = layer(small)
    beside = layer(torch.cat([small, huge], dim=1))[:, :5]
    torch.testing.assert_close(beside, alone, rtol=0, atol=0)
    # One scale for the whole batch would flatten the small tokens to zero.
    assert alone.abs().max() > 0.1
    # And the quantization error is that of 8 bits, not more.
    reference = small @ grid_linear().weight.T + grid_linear().bias
    assert (alone - reference).abs().max() < 0.02 * reference.abs().max()


def test_a_bert_with_int8_linears_keeps_its_labels():
    settings = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=128, num_labels=9,
                          initializer_range=0.2)
    torch.manual_seed(0)
    model = BertForTokenClassification(settings).eval()
    ids = torch.randint(1, 100, (4, 12))
    batch = {"input_ids": ids.numpy(), "attention_mask": torch.ones_like(ids).numpy(),
             "token_type_ids": torch.zeros_like(ids).numpy()}
    expected = TorchBackend(model)(batch)
    replaced = quantize_linears(model)
    # Q, K, V, attention output, FFN in and out in each of 2 layers; the 9-label
    # classifier stays float (9 is no multiple of 8).
    assert replaced == 12
    assert isinstance(model.classifier, torch.nn.Linear)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.bert.encoder.modules())
    got = TorchBackend(model)(batch)
    agree = (got.argmax(-1) == expected.argmax(-1)).mean()
    assert agree >= 0.95, agree
    # 8-bit rounding moves these sharp random logits by under 5% of their range (4.5%
    # measured); a wrong scale or a transposed weight would move them by about all of it.
    assert abs(got - expected).max() < 0.08 * abs(expected).max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CUDA "
                    "_int_mm kernel (over 16 rows) is checked on a GPU")
def test_on_cuda_short_batches_are_padded_to_the_kernel_minimum():
    layer = grid_linear().cuda()
    x = torch.randint(-100, 100, (1, 3, 8), device="cuda").float()
    x[..., 1] = -127
    torch.testing.assert_close(Int8Linear(layer)(x), x @ layer.weight.T + layer.bias,
                               rtol=0, atol=0)
