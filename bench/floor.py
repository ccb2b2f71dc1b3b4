"""The compute floor: each model's FLOPs and the machine's best matrix throughput, which
together say how fast a model's matrix products alone could run here."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def model_shape(folder: Path) -> dict:
    """The shape FLOPs are counted from, as the artifact's manifest records it (a quantized
    artifact's, from the model it was made from)."""
    from edgener.runtime.predictor import read_artifact_manifest

    manifest = read_artifact_manifest(folder)
    return {"layers": manifest["layers"], "hidden_size": manifest["hidden_size"],
            "intermediate_size": manifest["intermediate_size"],
            "labels": len(manifest["labels"]),
            "params": manifest.get("params") or manifest.get("source_params")}


def flops(shape: dict, tokens: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one encoder pass over `tokens` positions: per layer
    the Q, K, V and output projections (8nh^2), the feed-forward (4nhi) and the attention
    products QK^T and AV (4n^2h); then the classifier. Embedding lookups, softmax and layer
    norms are memory-bound and left out, so this is a lower bound on the work."""
    n, h, i = tokens, shape["hidden_size"], shape["intermediate_size"]
    per_layer = 8 * n * h * h + 4 * n * h * i + 4 * n * n * h
    return shape["layers"] * per_layer + 2 * n * h * shape["labels"]


def gemm_gflops(threads: int, size: int = 1024, repeats: int = 20) -> dict[str, float]:
    """The machine's best matrix throughput at `threads` threads: FP32 from PyTorch's GEMM,
    INT8 (u8 x s8 -> s32) from ONNX Runtime's MatMulInteger, each the best of `repeats`."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    fp32 = _best_seconds(lambda: torch.mm(a, b), repeats)
    session = _int8_matmul_session(size, threads)
    feed = {"a": np.random.default_rng(0).integers(0, 255, (size, size), dtype=np.uint8)}
    int8 = _best_seconds(lambda: session.run(None, feed), repeats)
    work = 2 * size**3
    return {"fp32": work / fp32 / 1e9, "int8": work / int8 / 1e9}


def _best_seconds(call, repeats: int) -> float:
    call()
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - tick)
    return best


def _int8_matmul_session(size: int, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(1).integers(-127, 127, (size, size), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])],
        [numpy_helper.from_array(weight, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
