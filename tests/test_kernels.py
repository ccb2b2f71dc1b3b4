"""bench.kernels: which profile events count as a run's matrix kernels, the layers timed for
PyTorch, and the one-sentence batch it times."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

from bench.kernels import linear_layers, matrix_ms_per_run, sentence_batch
from edgener.runtime.encoding import Encoder


def node(op: str, ts: int, dur: int) -> dict:
    return {"cat": "Node", "name": f"{op}_node_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op}}


def run(ts: int, dur: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def test_matrix_ms_per_run_sums_matrix_nodes_inside_each_run():
    events = [
        run(1000, 500), run(3000, 500),  # two calls, 500 us each
        node("MatMul", 1010, 100), node("Relu", 1120, 50), node("QAttention", 1200, 200),
        node("DynamicQuantizeMatMul", 3010, 300), node("SkipLayerNormalization", 3320, 90),
        node("MatMul", 2000, 700),  # between calls (not a run's)
        {"cat": "Node", "name": "MatMul_node_fence_before", "ts": 3400, "dur": 5,
         "args": {"op_name": "MatMul"}},  # not a kernel time
    ]
    assert matrix_ms_per_run(events) == pytest.approx([0.3, 0.3])


def test_linear_layers_are_in_the_order_a_bert_runs_them(tiny_bert):
    config = BertConfig.from_pretrained(tiny_bert, num_labels=5)
    model = BertForTokenClassification(config).eval()
    ran = []
    for layer in linear_layers(model):
        layer.register_forward_hook(lambda module, *_: ran.append(module))
    ids = torch.tensor([[101, 2000, 2001, 102]])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert len(ran) == config.num_hidden_layers * 6 + 1  # Q, K, V, out, FFN in and out; head
    assert ran == linear_layers(model)


def test_sentence_batch_is_one_row_of_the_asked_positions(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    encoder = Encoder.from_transformers(
        tokenizer, ["O"], max_length=32, window_overlap=4, case_features=False)
    batch = sentence_batch(encoder, 9)
    assert {name: a.shape for name, a in batch.items()} == {
        "input_ids": (1, 9), "attention_mask": (1, 9), "token_type_ids": (1, 9)}
    ids = batch["input_ids"][0]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.pad_token_id not in ids and np.all(batch["attention_mask"] == 1)
    assert all(a.dtype == np.int64 for a in batch.values())
