"""neural-compressor's INT8 artifacts: an exported PT2E graph, run through torch.compile.

Why the graph is compiled: the converted graph run as is computes in FP32 with fake
quantize/dequantize steps; INT8 kernels (oneDNN qlinear) appear only with torch.compile and
inductor freezing. With dynamic=True it does not recompile across batch and sequence sizes,
except for a size of one (0/1 specialisation, ~20 s more): hence the padding below.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from edgener.runtime.artifacts import ArtifactError
from edgener.runtime.backend import MODEL_INPUTS


def is_quantized(model: torch.nn.Module) -> bool:
    graph = getattr(model, "graph", None)
    return graph is not None and any(
        "quantize" in getattr(node.target, "_opname", "") for node in graph.nodes)


class GraphBackend:
    """An exported (and possibly quantized) graph as a backend; INT8 graphs are compiled."""

    def __init__(self, model: torch.nn.Module, threads: int | None = None,
                 compile: bool | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.compiled = is_quantized(model) if compile is None else compile
        self._run = torch.compile(model, dynamic=True) if self.compiled else model

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        rows, width = batch["input_ids"].shape
        arrays = [np.asarray(batch[name]) for name in MODEL_INPUTS]
        # A size of 1 makes dynamo specialise and compile again (~20 s): run a copy of the
        # row, or a masked padding position, and drop it from the logits.
        if rows < 2:
            arrays = [np.repeat(a, 2, axis=0) for a in arrays]
        if width < 2:
            arrays = [np.pad(a, ((0, 0), (0, 1))) for a in arrays]
        logits = self.forward([torch.from_numpy(a) for a in arrays])
        return logits[:rows, :width].float().numpy()

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """The program on input tensors as they are (no padding: a size of 1 compiles again)."""
        # Here, not at the top: the compiler stack takes seconds to import, and only
        # neural-compressor artifacts need it.
        from torch._dynamo.exc import TorchDynamoException
        from torch._inductor import config as inductor_config

        try:
            # Freezing makes the weights constants, which is what lets inductor pack them
            # for oneDNN's INT8 GEMMs; without it the compiled graph still runs FP32 GEMMs.
            with torch.no_grad(), inductor_config.patch(freezing=True):
                return self._run(*inputs)
        except TorchDynamoException as error:
            raise ArtifactError(f"neural-compressor: torch.compile of the INT8 graph failed "
                                f"({type(error).__name__}: {str(error).splitlines()[0]})"
                                ) from error


def quiet_neural_compressor() -> None:
    """Silence INC's own logger (it logs every load, config and accelerator probe, the last
    on import). INC sets the level when its logger singleton is first made, so make it
    before setting ours, and before importing the rest of INC."""
    from neural_compressor.common.utils.logger import Logger

    Logger()
    logging.getLogger("neural_compressor").setLevel(logging.ERROR)


class IncBackend(GraphBackend):
    """A saved INC PT2E artifact (folder with quantized_weight.pt and qconfig.json)."""

    def __init__(self, folder: str | Path, threads: int | None = None, compile: bool = True):
        quiet_neural_compressor()
        from neural_compressor.torch.quantization import load

        try:
            model = load(str(folder))
        except (OSError, RuntimeError, ValueError) as error:
            raise ArtifactError(f"neural-compressor: cannot load {folder} "
                                f"({str(error).splitlines()[0]})") from error
        super().__init__(model, threads, compile)
