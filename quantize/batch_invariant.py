"""Batch-invariant dynamic INT8: activation scales per sequence, over its real tokens.

ONNX Runtime's dynamic quantization (DynamicQuantizeLinear) takes one scale and zero point
over the whole activation tensor. In a padded batch that is every row and the padding
together, so a text's entities change with what it is batched with. This rewrite keeps
that graph for a batch of one window, where the tensor is exactly one sequence and no
padding, and adds a second branch for larger batches that computes the same quantization
row by row: each sequence's scale and zero point from its own real tokens (padding masked
out), the same rounding, the same integer matrix products. A window gets the same integers
through either branch; only float rounding in the attention (done by MultiHeadAttention in
the batched branch, inside QAttention in the single one) could differ, and on CoNLL-2003
test it did not: every window's logits batched equal its logits alone, bit for bit
(docs/results.md).

    model = onnx.load("dynamic.onnx")      # quantize_dynamic on the fused graph
    onnx.save(per_sequence_scales(model), "model.onnx")

The single-window branch is the old graph unchanged, so batch-1 latency stays what it was.
Standard ONNX operators and ONNX Runtime's CPU contrib operators only: the lean runtime
runs it as it runs any artifact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SINGLE, BATCHED = "single", "batched"  # the If's branches
MASK_INPUT = "attention_mask"


class GraphBuilder:
    """Nodes and constants of the batched branch, with fresh names under one prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.constants.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None,
           domain: str = "", **attributes) -> str:
        output = output or self.name(op_type)
        self.nodes.append(helper.make_node(op_type, inputs, [output], self.name(op_type),
                                           domain=domain, **attributes))
        return output


def per_sequence_scales(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (ONNX Runtime dynamic INT8 of a fused BERT graph) as an If on the batch size:
    the original graph for one window, per-sequence activation scales for more."""
    graph = model.graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    b = GraphBuilder(BATCHED)
    mask = b.op("Cast", [MASK_INPUT], to=TensorProto.FLOAT)
    mask_int32 = b.op("Cast", [MASK_INPUT], to=TensorProto.INT32)
    rows: dict[str, RowQuantization] = {}  # by the DynamicQuantizeLinear's quantized output
    replaced: set[int] = set()  # ids of old nodes that the batched branch does otherwise
    for node in graph.node:
        if id(node) in replaced:
            continue
        if node.op_type == "DynamicQuantizeLinear":
            rows[node.output[0]] = quantize_rows(b, node.input[0], mask, node.output[0])
            # Its scale's only use is its product with a weight scale, done per row below.
            replaced.update(id(n) for n in consumers.get(node.output[1], [])
                            if n.op_type == "Mul")
        elif node.op_type == "MatMulInteger" and node.input[0] in rows:
            # The old graph scales the product with MatMulInteger -> Cast -> Mul(scales).
            cast = consumers[node.output[0]][0]
            scaled = consumers[cast.output[0]][0]
            scales = producer[scaled.input[1]]
            replaced.update((id(cast), id(scaled)))
            dequantized_product(b, rows[node.input[0]], node.input[1], node.input[3],
                                scales.input[1], initializers, scaled.output[0])
        elif node.op_type == "QAttention":
            attention(b, node, rows[node.input[0]], initializers, mask_int32)
        else:
            b.nodes.append(node)
    return if_batched(model, b)


@dataclass(frozen=True)
class RowQuantization:
    x_q: str  # [B, T, K] uint8
    scale: str  # [B] float
    zero_point: str  # [B, 1, 1] int32


def quantize_rows(b: GraphBuilder, x: str, mask: str, x_q: str) -> RowQuantization:
    """DynamicQuantizeLinear's uint8 quantization with one scale and zero point a sequence,
    over its real tokens. The range always includes 0 (as DynamicQuantizeLinear's does), so
    zeroing the padding's extremes cannot move it. Writes the quantized tensor to `x_q`."""
    zero = b.constant("zero", np.array(0, np.float32))

    def extreme(reduce: str, clamp: str) -> str:
        per_token = b.op("Mul", [b.op(reduce, [x], axes=[-1], keepdims=0), mask])
        return b.op(clamp, [b.op(reduce, [per_token], axes=[1], keepdims=0), zero])

    high, low = extreme("ReduceMax", "Max"), extreme("ReduceMin", "Min")
    scale = b.op("Div", [b.op("Sub", [high, low]),
                         b.constant("levels", np.array(255, np.float32))])
    # An all-zero row: any positive scale quantizes it to zeros, as DynamicQuantizeLinear's 1.
    scale = b.op("Max", [scale, b.constant("tiny", np.array(np.finfo(np.float32).tiny,
                                                              np.float32))])
    zero_point = b.op("Round", [b.op("Div", [b.op("Neg", [low]), scale])])
    b.op("QuantizeLinear", [x, scale, b.op("Cast", [zero_point], to=TensorProto.UINT8)], x_q,
         axis=0)
    return RowQuantization(x_q, scale, b.op("Unsqueeze", [
        b.op("Cast", [zero_point], to=TensorProto.INT32),
        b.constant("axes", np.array([1, 2], np.int64))]))


def dequantized_product(b: GraphBuilder, row: RowQuantization, weight: str, weight_zero: str,
                        weight_scale: str, initializers: dict, output: str | None = None) -> str:
    """x_q @ w in FP32, with a zero point and a scale per row. sum (x - z_row)(w - z_w) is
    sum x (w - z_w) - z_row * colsum(w - z_w), in int32 (ONNX Runtime's MatMulInteger takes
    only a scalar activation zero point), so the integers are exactly the per-tensor
    product's; then Cast and Mul by each row's scale, as the old graph does with one scale.
    (DequantizeLinear with a per-row scale does the same in one operator, but its int32
    kernel took 14.7 ms of a [100, 23] batch of L3 where the pair takes about 8.)"""
    w = initializers[weight].astype(np.int32) - initializers[weight_zero].astype(np.int32)
    colsum = b.constant("colsum", w.sum(axis=0).astype(np.int32))
    product = b.op("Sub", [b.op("MatMulInteger", [row.x_q, weight, "", weight_zero]),
                           b.op("Mul", [row.zero_point, colsum])])
    scales = b.op("Mul", [expand_rows(b, row.scale), weight_scale])  # [B, 1, 1]
    return b.op("Mul", [b.op("Cast", [product], to=TensorProto.FLOAT), scales], output)


def expand_rows(b: GraphBuilder, row_values: str) -> str:
    """[B] -> [B, 1, 1], to broadcast over a row's tokens and features."""
    return b.op("Unsqueeze", [row_values, b.constant("axes", np.array([1, 2], np.int64))])


def attention(b: GraphBuilder, node: onnx.NodeProto, row: RowQuantization,
              initializers: dict, mask_int32: str) -> None:
    """QAttention (the quantized QKV projection, then attention) with per-row activation
    scales: the projection as a dequantized product, split into Q, K and V, then ONNX
    Runtime's MultiHeadAttention, which adds the projection's bias and masks the padding.
    (Three products of a third of the weight each would spare the Split's copy, 2% of a
    batched call, for a second copy of the weights in the file.)"""
    weight, bias, weight_scale, weight_zero = (node.input[i] for i in (1, 2, 4, 7))
    qkv = dequantized_product(b, row, weight, weight_zero, weight_scale, initializers)
    hidden = initializers[weight].shape[1] // 3
    q, k, v = (b.name(part) for part in "qkv")
    b.nodes.append(helper.make_node("Split", [qkv, b.constant("sizes", np.array(
        [hidden] * 3, np.int64))], [q, k, v], b.name("Split"), axis=-1))
    heads = next(a.i for a in node.attribute if a.name == "num_heads")
    b.op("MultiHeadAttention", [q, k, v, bias, mask_int32], node.output[0],
         domain="com.microsoft", num_heads=heads)


def if_batched(model: onnx.ModelProto, batched: GraphBuilder) -> onnx.ModelProto:
    """The model whose graph runs its old nodes for a batch of one and `batched`'s for
    more; both read the weights from the outer graph."""
    graph = model.graph
    outputs = list(graph.output)

    def branch(name: str, nodes: list, constants: list, value_info: list) -> onnx.GraphProto:
        renamed = [helper.make_tensor_value_info(f"{name}/{o.name}", o.type.tensor_type.elem_type,
                                                 None) for o in outputs]
        identity = [helper.make_node("Identity", [o.name], [r.name], f"{name}/output_{i}")
                    for i, (o, r) in enumerate(zip(outputs, renamed, strict=True))]
        return helper.make_graph(list(nodes) + identity, name, [], renamed,
                                 initializer=constants, value_info=value_info)

    single = branch(SINGLE, graph.node, [], list(graph.value_info))
    many = branch(BATCHED, batched.nodes, batched.constants, [])
    first = graph.input[0].name
    condition = [
        helper.make_node("Shape", [first], ["batch_size"], "batch_size", start=0, end=1),
        helper.make_node("Equal", ["batch_size", "one_row"], ["is_single"], "is_single"),
        helper.make_node("If", ["is_single"], [o.name for o in outputs], "by_batch_size",
                         then_branch=single, else_branch=many),
    ]
    new_graph = helper.make_graph(
        condition, graph.name, list(graph.input), outputs,
        initializer=[*graph.initializer,
                     numpy_helper.from_array(np.array([1], np.int64), "one_row")])
    result = helper.make_model(new_graph, opset_imports=list(model.opset_import),
                               producer_name=model.producer_name, ir_version=model.ir_version)
    result.metadata_props.extend(model.metadata_props)
    return result
