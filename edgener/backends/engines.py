"""TensorRT engines: building one from ONNX, the shapes it accepts, and what binds it to one
GPU and one TensorRT release.

A serialized engine runs only on the GPU model and the TensorRT version it was built with.
The manifest records what the engine was built for; loading it anywhere else is a one-line
error that names the command rebuilding it there (for a trt-int8 folder, from the
model.qdq.onnx it ships: `edge-ner build-engine FOLDER`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

from edgener.runtime.artifacts import ArtifactError
from edgener.runtime.errors import UserError

ENGINE, ENGINE_SOURCE = "model.engine", "model.qdq.onnx"
# The manifest's tensorrt facts that must match the machine an engine is loaded on.
BINDING = ("gpu", "compute_capability", "tensorrt_version")


@dataclasses.dataclass(frozen=True)
class ShapeProfile:
    """The [batch, sequence] shapes an engine accepts (min to max), tuned for opt."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def as_dict(self) -> dict:
        return {"axes": ["batch", "sequence"], "min": list(self.min), "opt": list(self.opt),
                "max": list(self.max)}

    @classmethod
    def from_dict(cls, shapes: dict) -> ShapeProfile:
        return cls(*(tuple(shapes[key]) for key in ("min", "opt", "max")))

    def example_shape(self) -> tuple[int, int]:
        """A tracing shape inside the profile: torch.export specializes an axis traced at
        size 1, so dynamic axes are traced at 2 or more."""
        batch, length = (min(hi, max(opt, 2)) if hi > lo else lo
                         for lo, opt, hi in zip(self.min, self.opt, self.max, strict=True))
        return batch, length


def rebuild_command(folder: str | Path, backend: str) -> str:
    """How to rebuild an engine for this machine: from the folder's own QDQ source for a
    TensorRT engine; a Torch-TensorRT program needs the PyTorch model, so the stage."""
    if backend == "tensorrt":
        return f"edge-ner build-engine {folder}"
    return "make quantize ARGS=\"--fresh variants=[trt-fp16]\""


def machine_facts() -> dict:
    """The GPU and TensorRT release of this machine, as a manifest records them."""
    import tensorrt
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return {"tensorrt_version": tensorrt.__version__, "gpu": torch.cuda.get_device_name(0),
            "compute_capability": f"{major}.{minor}", "cuda_version": torch.version.cuda,
            "torch_version": torch.__version__}


def check_binding(folder: str | Path, backend: str, built: dict, here: dict) -> None:
    """Raise a one-line ArtifactError if the engine in `folder`, built on `built` (its
    manifest's tensorrt facts), cannot run on `here` (machine_facts())."""
    if all(built.get(key) == here.get(key) for key in BINDING):
        return

    def describe(facts: dict) -> str:
        return (f"{facts.get('gpu', 'an unknown GPU')} (compute "
                f"{facts.get('compute_capability', '?')}) with TensorRT "
                f"{facts.get('tensorrt_version', '?')}")

    raise ArtifactError(f"the engine in {folder} was built for {describe(built)}; this is "
                        f"{describe(here)}: rebuild it here with "
                        f"`{rebuild_command(folder, backend)}`")


def dtype_name(dtype: object) -> str:
    """'FLOAT' for trt.DataType.FLOAT (and for the plain string 'DataType.FLOAT')."""
    return str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]


class TensorRTBuildError(UserError, RuntimeError):
    """TensorRT could not parse or build a model (one line, with TensorRT's reason)."""


def network_flags(trt: ModuleType) -> int:
    """A strongly typed network, as TensorRT's explicit-quantization guide asks (with no
    precision flags): TensorRT 10 needs the creation flag for it, TensorRT 11 accepts the
    flag and is strongly typed anyway. TensorRT 8 (JetPack 5) has no such networks."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise TensorRTBuildError(f"TensorRT {trt.__version__} has no strongly typed "
                                 "networks, which these engines need: use TensorRT 10 or "
                                 "later (JetPack 6)")
    return 1 << int(flag)


def build_engine(onnx_path: Path, engine_path: Path, profile: ShapeProfile) -> dict:
    """Parse an ONNX model, build an engine for `profile` on every input and serialize it to
    engine_path; returns the engine's input and output dtypes."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    builder_config = builder.create_builder_config()
    optimization = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        optimization.set_shape(network.get_input(index).name, profile.min, profile.opt,
                               profile.max)
    builder_config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT could not build an engine from {onnx_path.name} "
                                 "(its log above says why)")
    with open(engine_path, "wb") as f:
        f.write(serialized)
    io = [network.get_input(i) for i in range(network.num_inputs)] + \
        [network.get_output(i) for i in range(network.num_outputs)]
    return {tensor.name: dtype_name(tensor.dtype) for tensor in io}
