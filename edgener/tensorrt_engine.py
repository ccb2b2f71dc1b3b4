"""TensorRT engines from ONNX, and the facts that bind an engine to one GPU and one
TensorRT release.

A serialized engine runs only on the GPU model and the TensorRT version it was built with.
A trt-int8 folder therefore ships its source too, model.qdq.onnx (explicit quantization:
the Q/DQ pairs say what runs in INT8), and `edge-ner build-engine FOLDER` rebuilds
model.engine from it on the target device: a Jetson with JetPack's TensorRT 10, say. The
manifest records what the engine was built for; loading it anywhere else is a one-line
error that names that command.

Needs TensorRT's Python bindings and PyTorch with CUDA (the engine's I/O buffers are torch
tensors); neither is imported until an engine is built or loaded.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

from edgener.artifacts import (
    MANIFEST,
    ArtifactError,
    publish_dir,
    read_json,
    seal_folder,
)
from edgener.backends import ShapeProfile
from edgener.errors import UserError

ENGINE, ENGINE_SOURCE = "model.engine", "model.qdq.onnx"
# The manifest's tensorrt facts that must match the machine an engine is loaded on.
BINDING = ("gpu", "compute_capability", "tensorrt_version")


class TensorRTBuildError(UserError, RuntimeError):
    """TensorRT could not parse or build a model (one line, with TensorRT's reason)."""


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


def dtype_name(dtype: object) -> str:
    """'FLOAT' for trt.DataType.FLOAT (and for the plain string 'DataType.FLOAT')."""
    return str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]


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


def rebuild(folder: str | Path) -> dict:
    """Rebuild the engine of a trt-int8 folder from its model.qdq.onnx on this machine,
    with the shapes its manifest records, and publish the folder again (atomically) with
    this machine's facts. Returns the new manifest."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(f"{folder} is no artifact folder ({MANIFEST} missing)")
    manifest = read_json(folder / MANIFEST)
    if manifest.get("backend") != "tensorrt":
        raise ArtifactError(f"{folder} is a {manifest.get('backend')} artifact; build-engine "
                            "rebuilds TensorRT INT8 engines (trt-int8 folders)")
    if not (folder / ENGINE_SOURCE).is_file():
        raise ArtifactError(f"{folder} lacks {ENGINE_SOURCE}, the engine's source; rebuild "
                            "the folder with `make quantize ARGS=--fresh`")
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError as error:
        raise ArtifactError(f"build-engine needs TensorRT's Python bindings and PyTorch "
                            f"({error.name} is not installed; on a Jetson both come with "
                            "JetPack)") from error
    if not torch.cuda.is_available():
        raise ArtifactError("build-engine needs an NVIDIA GPU; this machine has no CUDA device")
    settings = manifest["tensorrt"]
    profile = ShapeProfile.from_dict(settings["shapes"])
    here = machine_facts()
    started = time.time()
    with publish_dir(folder) as staging:
        for path in folder.iterdir():
            if path.is_file() and path.name != ENGINE:
                (staging / path.name).write_bytes(path.read_bytes())
        io = build_engine(staging / ENGINE_SOURCE, staging / ENGINE, profile)
        previous = {key: settings.get(key) for key in (*BINDING, "cuda_version")}
        first = settings.get("rebuilt", {})
        manifest["tensorrt"] = settings | here | {
            "io_dtypes": io,
            "rebuilt": {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "was": previous,
                        "seconds": round(time.time() - started, 1),
                        # No data travels with an artifact: its F1 and latency are the
                        # first build's, on its GPU.
                        "f1_measured_on": first.get("f1_measured_on", previous["gpu"]),
                        "first_build_latency": first.get("first_build_latency",
                                                         manifest.get("latency"))}}
        manifest["latency"] = None
        manifest["size_mb"] = round((staging / ENGINE).stat().st_size / 2**20, 2)
        metrics = read_json(folder / "metrics.json")
        return seal_folder(staging, folder, manifest, metrics)
