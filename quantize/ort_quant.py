"""ONNX Runtime on CPU: transformer fusions, INT8 dynamic quantization, and INT8 static
quantization in QDQ form with a sensitivity fallback.

The static model is quantized on the plain exported graph (standard ONNX operators only)
with symmetric per-channel int8 weights. Its activations differ by target: uint8 with a
zero point for ONNX Runtime on x86 (its u8 x s8 kernels; int8 x int8 QDQ measured several
times slower than FP32 on this AVX2 CPU), with weights in a 7-bit range so that the u8 x s8
pair sums of CPUs without VNNI cannot saturate; symmetric int8 for TensorRT's explicit
quantization, which requires it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from edgener.runtime.conll import Sentence
from edgener.runtime.encoding import Encoder, pad_arrays, token_batches
from quantize.config import CALIBRATION_METHODS

LAYER_OF_NODE = re.compile(r"layer\.(\d+)/")


def fuse(source: Path, target: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ONNX Runtime's BERT fusions (embedding+LayerNorm, attention, bias+GELU), with each
    residual add and LayerNorm left as Add and LayerNormalization (see split_skip_layer_norm);
    returns how many of each fused operator the graph now has."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type="bert", num_heads=num_heads,
                               hidden_size=hidden_size)
    split = split_skip_layer_norm(optimized.model)
    optimized.save_model_to_file(str(target))
    counts = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    counts.pop("SkipLayerNormalization", None)
    return counts | ({"LayerNormalization (residual)": split} if split else {})


def split_skip_layer_norm(model: onnx.ModelProto) -> int:
    """Rewrite each SkipLayerNormalization as Add (input + skip, + bias) and the standard
    LayerNormalization; returns how many. The values are the same, and ONNX Runtime 1.32's
    CPU kernel for the fused operator measured 5.6x slower than the pair on this project's
    test machine (a [100, 23, 384] batch: 2.24 ms against 0.40 ms; 29 against 15 us for one
    sentence), a sixth of a batched L3 call (docs/results.md)."""
    nodes = list(model.graph.node)
    rewritten = 0
    for node in nodes:
        if node.op_type != "SkipLayerNormalization" or any(node.output[1:]):
            continue
        x, skip, gamma, beta, *bias = node.input
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        summed = f"{node.name}_sum"
        replacement = [onnx.helper.make_node("Add", [x, skip], [summed], f"{node.name}_add")]
        if bias and bias[0]:
            replacement.append(onnx.helper.make_node(
                "Add", [summed, bias[0]], [f"{summed}_bias"], f"{node.name}_add_bias"))
            summed = f"{summed}_bias"
        replacement.append(onnx.helper.make_node(
            "LayerNormalization", [summed, gamma, beta], [node.output[0]], node.name,
            axis=-1, epsilon=epsilon))
        position = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for offset, new in enumerate(replacement):
            model.graph.node.insert(position + offset, new)
        rewritten += 1
    return rewritten


def quantize_dynamic_int8(source: Path, target: Path) -> None:
    """Weights int8 ahead of time, activations quantized at run time, one scale and zero
    point per sequence (see quantize.batch_invariant): a text's tags do not depend on what
    it is batched with."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from quantize.batch_invariant import per_sequence_scales

    # The fused graph's contrib operators defeat ONNX shape inference; their outputs are FP32.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=False,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    onnx.save(per_sequence_scales(onnx.load(str(target))), str(target))


class CalibrationReader:
    """Batches of train windows for ONNX Runtime's calibrators (never valid or test)."""

    def __init__(self, encoder: Encoder, sentences: Sequence[Sentence],
                 max_tokens: int = 2048):
        # The windows the artifact will see: each sentence in its document's context, where
        # the encoder takes it.
        windows = encoder.encode_all([s.words for s in sentences],
                                     documents=[s.document for s in sentences])
        self.batches = [pad_arrays([windows[i] for i in indices], encoder.pad_id)
                        for indices in token_batches([len(w.input_ids) for w in windows],
                                                     max_tokens)]
        self.sentences = len(sentences)
        self.rewind()

    def rewind(self) -> None:
        self._iter: Iterator[dict] = iter(self.batches)

    def get_next(self) -> dict | None:
        return next(self._iter, None)


def quantize_static_qdq(source: Path, target: Path, reader: CalibrationReader, method: str,
                        quantize_embeddings: bool, exclude: Sequence[str] = (),
                        symmetric_activations: bool = False) -> None:
    """Static INT8 in QDQ form: per-channel symmetric int8 weights; activations calibrated
    on `reader`, uint8 with a zero point (ONNX Runtime on CPU) or symmetric int8
    (TensorRT); nodes in `exclude` stay FP32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration_method {method!r}: choose one of "
                         f"{', '.join(CALIBRATION_METHODS)}")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    op_types = ["MatMul", "Gemm", *(["Gather"] if quantize_embeddings else [])]
    reader.rewind()
    quantize_static(
        str(source), str(target), reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=True,
        reduce_range=not symmetric_activations,
        activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        calibrate_method=methods[method],
        extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
    )
    if quantize_embeddings:  # only quantized tables need the rewrite
        model = onnx.load(str(target))
        if gather_before_dequantize(model):
            onnx.save(model, str(target))


def gather_before_dequantize(model: onnx.ModelProto) -> int:
    """Rewrite DequantizeLinear(int8 table) -> Gather as Gather(int8 table) ->
    DequantizeLinear, where the table's scale is one number (the values are identical).

    ONNX Runtime keeps a DequantizeLinear on a constant as it is, so in the first form every
    call dequantizes the whole embedding table (30,522 x 384 values for BERT's vocabulary)
    to read a few rows: that alone made static models several times slower than FP32 on
    CPU. Returns how many Gathers were rewritten."""
    initializers = {init.name: init for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers = Counter(name for node in model.graph.node for name in node.input)
    rewritten = 0
    for gather in [n for n in model.graph.node if n.op_type == "Gather"]:
        dequantize = producer.get(gather.input[0])
        if (dequantize is None or dequantize.op_type != "DequantizeLinear"
                or dequantize.input[0] not in initializers
                or any(initializers.get(name) is None or len(initializers[name].dims)
                       for name in dequantize.input[1:])):
            continue
        gathered = f"{gather.output[0]}_quantized"
        position = list(model.graph.node).index(gather)
        # Right after the Gather: before everything that read the Gather's output.
        model.graph.node.insert(position + 1, onnx.helper.make_node(
            "DequantizeLinear", [gathered, *dequantize.input[1:]], [gather.output[0]],
            name=f"{gather.name}_DequantizeLinear"))
        gather.input[0] = dequantize.input[0]
        gather.output[0] = gathered
        consumers[dequantize.output[0]] -= 1
        if consumers[dequantize.output[0]] == 0:
            model.graph.node.remove(dequantize)
        rewritten += 1
    return rewritten


def float_weights(model: onnx.ModelProto) -> set[str]:
    """Float matrices (FP32, or FP16 in trt-int8's FP16 regions) among the initializers."""
    return {init.name for init in model.graph.initializer if len(init.dims) == 2
            and init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}


def quantizable_nodes(path: Path, quantize_embeddings: bool) -> list[onnx.NodeProto]:
    """The nodes static quantization touches: every MatMul/Gemm (on a weight, or the two
    attention products) and, with quantize_embeddings, the embedding-table Gathers."""
    model = onnx.load(str(path))
    weights = float_weights(model)
    return [node for node in model.graph.node
            if node.op_type in ("MatMul", "Gemm")
            or (quantize_embeddings and node.op_type == "Gather" and node.input[0] in weights)]


def matrix_ops(model: onnx.ModelProto) -> Iterator[tuple[onnx.NodeProto, bool]]:
    """(node, whether it computes in INT8) for every MatMul/Gemm and embedding-table Gather.

    A MatMul/Gemm is INT8 when DequantizeLinear feeds both operands; a Gather when its table
    is an 8-bit initializer (gathered before it is dequantized) or comes out of a
    DequantizeLinear, and FP32 when its table is an FP32 matrix. Nodes inside an If's
    branches count once per branch."""
    weights = float_weights(model)
    tables_8bit = {init.name for init in model.graph.initializer if len(init.dims) == 2
                   and init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    nodes = list(graph_nodes(model.graph))
    dequantized = {out for node in nodes if node.op_type == "DequantizeLinear"
                   for out in node.output}
    for node in nodes:
        if node.op_type in ("MatMul", "Gemm"):
            yield node, all(name in dequantized for name in node.input[:2])
        elif node.op_type == "Gather" and node.input[0] in weights:
            yield node, False
        elif node.op_type == "Gather" and node.input[0] in tables_8bit | dequantized:
            yield node, True


def graph_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of `graph` and of the subgraphs (an If's branches) inside it."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from graph_nodes(attribute.g)


def float_ops(path: Path) -> dict[str, int]:
    """Operators that still compute in FP32, by type: MatMul/Gemm not fed by
    DequantizeLinear on both operands, and Gathers on an FP32 embedding table."""
    return dict(Counter(node.op_type for node, int8 in matrix_ops(onnx.load(str(path)))
                        if not int8))


def quantized_groups(path: Path) -> list[str]:
    """The groups (see node_group) with at least one operator computing in INT8, read from
    the QDQ graph itself: what the artifact is, whatever the fallback set out to keep."""
    return sorted({node_group(node.name) for node, int8 in matrix_ops(onnx.load(str(path)))
                   if int8})


def node_group(node_name: str) -> str:
    """The encoder layer a node belongs to ('layer.3'), else 'embeddings' or 'head'."""
    match = LAYER_OF_NODE.search(node_name)
    if match:
        return f"layer.{match.group(1)}"
    return "embeddings" if "embeddings" in node_name else "head"


def sensitivity_fallback(
    source: Path, target: Path, reader: CalibrationReader, method: str,
    quantize_embeddings: bool, logit_error: Callable[[Path], float],
    f1_of: Callable[[Path], float], min_f1: float,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[float, list[str], dict[str, float]]:
    """Keep the most sensitive layers in FP32 until the static model's F1 reaches min_f1.

    A group's sensitivity is the mean squared logit error (against FP32, on calibration
    data) when that group alone is quantized. Groups go back to FP32 most sensitive first;
    after each, the model is rebuilt and its F1 measured. Returns (F1, groups kept in FP32,
    sensitivity of each group). The model at `target` is the last one built.
    """
    nodes = quantizable_nodes(source, quantize_embeddings)
    groups: dict[str, list[str]] = {}
    for node in nodes:
        groups.setdefault(node_group(node.name), []).append(node.name)
    all_names = [node.name for node in nodes]
    sensitivity = {}
    for group, names in groups.items():
        progress(f"sensitivity of {group}")
        others = [n for n in all_names if n not in names]
        quantize_static_qdq(source, target, reader, method, quantize_embeddings, others)
        sensitivity[group] = logit_error(target)
    kept: list[str] = []
    f1 = -1.0
    for group in sorted(groups, key=lambda g: -sensitivity[g]):
        kept.append(group)
        progress(f"FP32: {', '.join(kept)}")
        excluded = [n for g in kept for n in groups[g]]
        quantize_static_qdq(source, target, reader, method, quantize_embeddings, excluded)
        f1 = f1_of(target)
        if f1 >= min_f1 or len(kept) == len(groups):
            break
    return f1, kept, sensitivity


def mean_squared_logit_error(reference: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean((reference - actual) ** 2))
