"""The backends that run in PyTorch: Hugging Face folders (teacher, students) in eager
mode, neural-compressor's PT2E save through torch.compile, and TensorRT artifacts on the
GPU. Each maps a padded batch of model inputs to token logits (see edgener.runtime);
edgener.backends imports this module only when such an artifact is loaded.

Why the INC graph is compiled: the converted graph run as is computes in FP32 with fake
quantize/dequantize steps; INT8 kernels (oneDNN qlinear) appear only with torch.compile and
inductor freezing. With dynamic=True it does not recompile across batch and sequence sizes,
except for a size of one (0/1 specialisation, ~20 s more): hence the padding below.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from edgener.artifacts import ArtifactError
from edgener.backends import ShapeProfile
from edgener.runtime import MODEL_INPUTS, Backend
from edgener.tensorrt_engine import dtype_name

# The compiled program takes int32 ids: TensorRT's index type, and every id, mask and
# type value fits; the backend casts the runtime's int64 arrays.
PROGRAM_INPUT_DTYPE = torch.int32

TRT_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
              "INT8": torch.int8, "INT32": torch.int32, "INT64": torch.int64,
              "BOOL": torch.bool}


class TokenLogits(torch.nn.Module):
    """A Hugging Face token classifier with positional inputs and bare logits: the plain
    signature (input_ids, attention_mask, token_type_ids) -> logits that torch.export,
    neural-compressor and TensorRT programs share, free of transformers' output classes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits


class TorchBackend:
    """A PyTorch token classifier as a backend (eval mode, no gradients), on `device`."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.model, self.device = model, device

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(batch[k]).to(self.device) for k in MODEL_INPUTS}
        return self.model(**inputs).logits.float().cpu().numpy()


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


# How a PyTorch model folder can run: FP32 as trained, FP16, or INT8 matrix products
# (edgener.torch_int8) with the rest in FP16 on a GPU and FP32 on a CPU.
PRECISIONS = ("fp32", "fp16", "int8")


def hf_backend(folder: Path, threads: int | None = None, device: str = "cpu",
               precision: str = "fp32") -> Backend:
    """A published Hugging Face folder (teacher or student) in PyTorch eager mode, on
    `device` at `precision` (one of PRECISIONS)."""
    if threads:
        torch.set_num_threads(threads)
    return TorchBackend(hf_model(folder, device, precision), device)


def hf_model(folder: Path, device: str = "cpu", precision: str = "fp32") -> torch.nn.Module:
    from transformers import AutoModelForTokenClassification

    from edgener.torch_int8 import quantize_linears

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    try:
        # FP32 whatever the checkpoint holds: the precision is chosen here, not by the file.
        model = AutoModelForTokenClassification.from_pretrained(
            folder, dtype=torch.float32).eval()
    except (OSError, ValueError) as error:
        raise ArtifactError(f"cannot load the PyTorch model in {folder} "
                            f"({str(error).splitlines()[0]})") from error
    half = precision == "fp16" or (precision == "int8" and torch.device(device).type == "cuda")
    model = model.to(device=device, dtype=torch.float16 if half else torch.float32)
    if precision == "int8":
        quantize_linears(model)
    return model


def engine_backend(folder: Path, manifest: dict, path: Path) -> Backend:
    """A TensorRT engine or Torch-TensorRT program, which needs an NVIDIA GPU, and the GPU
    model and TensorRT release it was built for."""
    from edgener.tensorrt_engine import check_binding, machine_facts

    backend, settings = manifest["backend"], manifest["tensorrt"]
    if not torch.cuda.is_available():
        raise ArtifactError(f"{folder} is a {backend} engine and needs an NVIDIA GPU; "
                            "this machine has no CUDA device")
    check_binding(folder, backend, settings, machine_facts())
    profile = ShapeProfile.from_dict(settings["shapes"])
    if backend == "torch-tensorrt":
        return TorchTensorRTBackend.from_file(path, profile)
    return TensorRTEngineBackend.from_file(path, profile)
