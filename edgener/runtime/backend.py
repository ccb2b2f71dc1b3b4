"""The backend protocol every artifact runs behind, and the base install's backend.

A backend is a callable from a padded batch of model inputs (numpy int64 arrays named
input_ids, attention_mask, token_type_ids) to token logits [batch, tokens, labels]. ONNX
artifacts run in ONNX Runtime here; the backends that need PyTorch or TensorRT live in
edgener.backends, outside the base install.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgener.runtime.artifacts import ArtifactError

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
