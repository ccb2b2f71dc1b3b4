"""TensorRT artifacts on an NVIDIA GPU: a serialized TensorRT engine (trt-int8) or a
Torch-TensorRT program (trt-fp16), each run within the shapes it was built for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgener.backends.engines import ShapeProfile, check_binding, dtype_name, machine_facts
from edgener.runtime.artifacts import ArtifactError
from edgener.runtime.backend import MODEL_INPUTS, Backend

# The compiled program takes int32 ids: TensorRT's index type, and every id, mask and
# type value fits; the backend casts the runtime's int64 arrays.
PROGRAM_INPUT_DTYPE = torch.int32


TRT_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
              "INT8": torch.int8, "INT32": torch.int32, "INT64": torch.int64,
              "BOOL": torch.bool}


def torch_dtype(dtype: object) -> torch.dtype:
    """The torch dtype of a TensorRT DataType (or its name)."""
    name = dtype_name(dtype)
    if name not in TRT_DTYPES:
        raise TypeError(f"no torch dtype for TensorRT {name}")
    return TRT_DTYPES[name]


class ProfiledBackend:
    """A backend over an engine built for `profile`: batches larger than its max batch run
    in slices, and a window longer than its max length is an error, not a crash on the
    GPU."""

    def __init__(self, profile: ShapeProfile):
        self.profile = profile

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        size, length = batch["input_ids"].shape
        if length > self.profile.max[1]:
            raise ValueError(f"a batch of {length}-token windows exceeds the engine's maximum "
                             f"of {self.profile.max[1]} tokens (trt_max_length)")
        step = self.profile.max[0]
        parts = [self.run({name: batch[name][start: start + step] for name in MODEL_INPUTS})
                 for start in range(0, size, step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class TorchTensorRTBackend(ProfiledBackend):
    """A Torch-TensorRT ExportedProgram's module (`from_file` loads a saved one), run on
    `device` with int32 ids."""

    def __init__(self, module: torch.nn.Module, profile: ShapeProfile, device: str = "cuda"):
        super().__init__(profile)
        self.module, self.device = module, device

    @classmethod
    def from_file(cls, path: str | Path, profile: ShapeProfile) -> TorchTensorRTBackend:
        import torch_tensorrt

        return cls(torch_tensorrt.load(str(path)).module(), profile)

    @torch.no_grad()
    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = [torch.from_numpy(batch[name]).to(self.device, PROGRAM_INPUT_DTYPE)
                  for name in MODEL_INPUTS]
        return self.module(*inputs).float().cpu().numpy()


class TensorRTEngineBackend(ProfiledBackend):
    """A deserialized TensorRT engine, run on torch tensors on `device` as its I/O buffers
    (`from_file` loads one; any object with TensorRT's engine API will do)."""

    def __init__(self, engine, profile: ShapeProfile, device: str = "cuda"):
        super().__init__(profile)
        self.engine, self.device, self.stream = engine, device, None
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if dtype_name(engine.get_tensor_mode(n)) == "INPUT"]
        self.outputs = [n for n in names if n not in self.inputs]

    @classmethod
    def from_file(cls, path: str | Path, profile: ShapeProfile) -> TensorRTEngineBackend:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if engine is None:
            raise ArtifactError(f"TensorRT cannot load {path} (its log above says why)")
        backend = cls(engine, profile)
        # The runtime must outlive the engine and its context.
        backend.runtime, backend.logger = runtime, logger
        return backend

    @torch.no_grad()
    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if self.device == "cpu":  # a planted engine on host memory: no stream to order
            return self.enqueue(batch, 0)
        # A stream of its own: TensorRT synchronizes around work enqueued on the default
        # stream. The copies, the engine and the copy back are ordered on it, and .cpu()
        # waits for them.
        if self.stream is None:
            self.stream = torch.cuda.Stream(device=self.device)
        with torch.cuda.stream(self.stream):
            return self.enqueue(batch, self.stream.cuda_stream)

    def enqueue(self, batch: dict[str, np.ndarray], stream: int) -> np.ndarray:
        feeds = {}
        for name in self.inputs:
            tensor = torch.from_numpy(batch[name]).to(
                self.device, torch_dtype(self.engine.get_tensor_dtype(name))).contiguous()
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise ValueError(f"the engine does not accept {name} of shape "
                                 f"{tuple(tensor.shape)}")
            self.context.set_tensor_address(name, tensor.data_ptr())
            feeds[name] = tensor  # alive until the engine has read it
        results = {}
        for name in self.outputs:
            results[name] = torch.empty(tuple(self.context.get_tensor_shape(name)),
                                        dtype=torch_dtype(self.engine.get_tensor_dtype(name)),
                                        device=self.device)
            self.context.set_tensor_address(name, results[name].data_ptr())
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("TensorRT failed to run the engine")
        return results[self.outputs[0]].float().cpu().numpy()


def engine_backend(folder: Path, manifest: dict, path: Path) -> Backend:
    """A TensorRT engine or Torch-TensorRT program, which needs an NVIDIA GPU, and the GPU
    model and TensorRT release it was built for."""

    backend, settings = manifest["backend"], manifest["tensorrt"]
    if not torch.cuda.is_available():
        raise ArtifactError(f"{folder} is a {backend} engine and needs an NVIDIA GPU; "
                            "this machine has no CUDA device")
    check_binding(folder, backend, settings, machine_facts())
    profile = ShapeProfile.from_dict(settings["shapes"])
    if backend == "torch-tensorrt":
        return TorchTensorRTBackend.from_file(path, profile)
    return TensorRTEngineBackend.from_file(path, profile)
