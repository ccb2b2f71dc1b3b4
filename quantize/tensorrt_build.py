"""TensorRT variants, on NVIDIA GPUs only: `trt-fp16` and `trt-int8`.

trt-fp16: the PyTorch model in FP16, exported with torch.export for dynamic batch and
sequence axes, compiled by Torch-TensorRT's dynamo frontend and saved as an ExportedProgram
(model.ep) that `torch_tensorrt.load` reads back.

trt-int8: explicit quantization. The plain ONNX export is quantized into QDQ form as
ort-int8-static is, but with symmetric int8 activations, as TensorRT requires (int8
symmetric per-channel weights, calibrated on train sentences); TensorRT's ONNX parser
reads it into a strongly typed network, so the Q/DQ pairs decide what runs in int8, and
the engine is serialized to model.engine. Torch-TensorRT's own INT8 route needs NVIDIA
ModelOpt to insert the Q/DQ nodes; this path reuses the project's calibration and QDQ
quantizer instead, the ones the CPU variants already judge, and TensorRT 11 has no other
INT8 route (its implicit INT8 calibration and precision builder flags are gone).

Both artifacts hold engines for one GPU architecture and one TensorRT version; the settings
they were built with go to the manifest.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import torch

from edgener.artifacts import ArtifactError
from edgener.backends import ShapeProfile
from edgener.config import ConfigError
from edgener.runtime import MODEL_INPUTS
from edgener.torch_backends import (
    PROGRAM_INPUT_DTYPE,
    TensorRTEngineBackend,
    TokenLogits,
    TorchTensorRTBackend,
    trt_dtype_name,
)
from quantize import ort_quant
from quantize.build import Built, Source
from quantize.config import GPU_VARIANTS, QuantizeConfig

PACKAGES = ("tensorrt", "torch_tensorrt")
INSTALL_HINT = "pip install -e '.[tensorrt]'"
# torch_tensorrt.dynamo.CompilationSettings fields set when the installed release has them.
# Explicit typing makes TensorRT keep the FP16 the model is cast to (older releases default
# to weak typing, where TensorRT may pick FP32 kernels); the SDPA converter's causal-bias
# shortcut would be wrong for BERT's padding mask, should any attention reach it.
WANTED_COMPILE_SETTINGS = {"use_explicit_typing": True, "attn_bias_is_causal": False}


class TensorRTBuildError(RuntimeError):
    """TensorRT could not parse or build a model."""


def shape_profile(config: QuantizeConfig, window_length: int,
                  position_limit: int | None = None) -> ShapeProfile:
    """min (1, 1), max (trt_max_batch, trt_max_length or the encoder's window length), opt
    half the window (dynamic padding makes most batches shorter than the window) and as
    many rows as a scoring batch's token budget holds at that length."""
    max_batch = config.trt_max_batch
    max_length = config.trt_max_length or window_length
    if max_batch < 1:
        raise ConfigError(f"trt_max_batch must be at least 1, got {max_batch}")
    if max_length < window_length:
        raise ConfigError(f"trt_max_length {max_length} is shorter than the encoder's "
                          f"{window_length}-token windows, which the engine must accept")
    if position_limit is not None and max_length > position_limit:
        raise ConfigError(f"trt_max_length {max_length} exceeds the model's "
                          f"{position_limit} position embeddings")
    opt_length = max(1, (max_length + 1) // 2)
    opt = (max(1, min(config.eval_batch_tokens // opt_length, max_batch)), opt_length)
    return ShapeProfile((1, 1), opt, (max_batch, max_length))


def tensorrt_available() -> tuple[bool, str]:
    """(True, what was found) where CUDA, TensorRT and Torch-TensorRT are usable, else
    (False, a one-line reason)."""
    if not torch.cuda.is_available():
        return False, (f"no CUDA device (torch {torch.__version__}): the TensorRT variants "
                       "need an NVIDIA GPU")
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        return False, (f"CUDA is available but {' and '.join(missing)} "
                       f"{'is' if len(missing) == 1 else 'are'} not installed ({INSTALL_HINT})")
    try:
        versions = {name: importlib.import_module(name).__version__ for name in PACKAGES}
    except Exception as error:  # a broken install fails in many ways; report, don't crash
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return False, f"CUDA is available but TensorRT fails to import: {message}"
    return True, (f"TensorRT {versions['tensorrt']}, Torch-TensorRT "
                  f"{versions['torch_tensorrt']} on {torch.cuda.get_device_name(0)}")


def build(variant: str, source: Source, config: QuantizeConfig, plain: Path, splits: dict,
          work: Path) -> Built:
    """Build `variant` (trt-fp16 or trt-int8) for `source`. Its runtime reads the artifact
    back from disk, so that what is scored is what is published. Raises ArtifactError with
    tensorrt_available()'s reason where CUDA or TensorRT is missing."""
    if variant not in GPU_VARIANTS:
        raise ValueError(f"{variant!r} is not a TensorRT variant; known: "
                         f"{', '.join(GPU_VARIANTS)}")
    available, reason = tensorrt_available()
    if not available:
        raise ArtifactError(f"{variant}: {reason}")
    profile = shape_profile(config, source.encoder.max_length,
                            getattr(source.model.config, "max_position_embeddings", None))
    out = work / variant
    out.mkdir(parents=True, exist_ok=True)
    if variant == "trt-fp16":
        return build_fp16(source, profile, out)
    return build_int8(source, config, plain, splits, profile, out)


def dynamic_shapes(profile: ShapeProfile) -> dict:
    """torch.export dynamic_shapes for the three inputs: batch and sequence shared by all,
    with the profile's bounds; an axis whose min equals its max stays static."""
    axes = {}
    for index, name in enumerate(("batch", "sequence")):
        if profile.max[index] > profile.min[index]:
            axes[index] = torch.export.Dim(name, min=profile.min[index],
                                           max=profile.max[index])
    return {name: dict(axes) for name in MODEL_INPUTS}


def example_inputs(profile: ShapeProfile, device: torch.device | str = "cpu",
                   dtype: torch.dtype = PROGRAM_INPUT_DTYPE) -> tuple[torch.Tensor, ...]:
    shape = profile.example_shape()
    return (torch.ones(shape, dtype=dtype, device=device),  # input_ids
            torch.ones(shape, dtype=dtype, device=device),  # attention_mask
            torch.zeros(shape, dtype=dtype, device=device))  # token_type_ids


def export_program(model: torch.nn.Module, profile: ShapeProfile,
                   device: torch.device | str = "cpu",
                   dtype: torch.dtype | None = None) -> torch.export.ExportedProgram:
    """torch.export of the classifier's logits over the profile's dynamic batch and
    sequence axes, on `device` with floating weights in `dtype` (a copy: the model is not
    modified)."""
    model = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    # Eager attention traces to plain matmul/softmax/add with the padding mask as an
    # additive bias, which TensorRT converts as is.
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        return torch.export.export(TokenLogits(model),
                                   example_inputs(profile, device),
                                   dynamic_shapes=dynamic_shapes(profile), strict=False)


def compile_settings(available: Iterable[str]) -> dict:
    """The optional settings this project wants, limited to those the installed
    Torch-TensorRT knows (its CompilationSettings fields)."""
    names = set(available)
    return {key: value for key, value in WANTED_COMPILE_SETTINGS.items() if key in names}


def build_fp16(source: Source, profile: ShapeProfile, out: Path) -> Built:
    import torch_tensorrt

    program = export_program(source.model, profile, "cuda", torch.float16)
    inputs = [torch_tensorrt.Input(min_shape=profile.min, opt_shape=profile.opt,
                                   max_shape=profile.max, dtype=PROGRAM_INPUT_DTYPE)
              for _ in MODEL_INPUTS]
    settings = compile_settings(
        field.name for field in dataclasses.fields(torch_tensorrt.dynamo.CompilationSettings))
    compiled = torch_tensorrt.dynamo.compile(program, arg_inputs=inputs, **settings)
    path = out / "model.ep"
    torch_tensorrt.save(compiled, str(path), output_format="exported_program",
                        arg_inputs=list(example_inputs(profile, "cuda")),
                        dynamic_shapes=dynamic_shapes(profile), retrace=True)
    del compiled, program
    torch.cuda.empty_cache()
    details = {"engine": "Torch-TensorRT ExportedProgram (model.ep; torch_tensorrt.load)",
               "tensorrt": {"precision": "fp16",
                            "typing": "strong: fp16 weights and activations",
                            "input_dtype": str(PROGRAM_INPUT_DTYPE).removeprefix("torch."),
                            "shapes": profile.as_dict(),
                            "compile_settings": settings, **device_facts()}}
    return Built({"model.ep": path}, "torch-tensorrt", "fp16",
                 TorchTensorRTBackend(path, profile), details)


def build_int8(source: Source, config: QuantizeConfig, plain: Path, splits: dict,
               profile: ShapeProfile, out: Path) -> Built:
    qdq = out / "model.qdq.onnx"
    sentences = quantize_for_tensorrt(source, config, plain, splits, qdq)
    engine_path = out / "model.engine"
    io = build_engine(qdq, engine_path, profile)
    details = {"engine": "serialized TensorRT engine (model.engine)",
               "quantization": "static QDQ, TensorRT explicit quantization",
               "calibration": {"method": config.calibration_method,
                               "sentences": sentences, "split": "train"},
               "weights": "int8 symmetric per-channel", "activations": "int8 symmetric",
               "embeddings_quantized": False, "fp32_ops": ort_quant.float_ops(qdq),
               "tensorrt": {"precision": "int8",
                            "typing": "strong: int8 where the Q/DQ pairs say, fp32 elsewhere",
                            "io_dtypes": io, "shapes": profile.as_dict(),
                            **device_facts()}}
    return Built({"model.engine": engine_path}, "tensorrt", "int8",
                 TensorRTEngineBackend(engine_path, profile), details)


def quantize_for_tensorrt(source: Source, config: QuantizeConfig, plain: Path, splits: dict,
                          target: Path) -> int:
    """The QDQ model TensorRT builds the INT8 engine from, calibrated on the first
    calibration_sentences train sentences (never valid or test); returns how many."""
    train = splits["train"][: config.calibration_sentences]
    reader = ort_quant.CalibrationReader(source.encoder, [s.words for s in train])
    # Embedding tables stay FP32: TensorRT's int8 kernels are the GEMMs, and a Gather
    # would read an int8 table through a DequantizeLinear that only gives back FP32.
    ort_quant.quantize_static_qdq(plain, target, reader, config.calibration_method,
                                  quantize_embeddings=False, symmetric_activations=True)
    return reader.sentences


def network_flags(trt: ModuleType) -> int:
    """A strongly typed network, as TensorRT's explicit-quantization guide asks (with no
    precision flags): TensorRT 10 needs the creation flag for it, TensorRT 11 accepts the
    flag and is strongly typed anyway."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


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
    return {tensor.name: trt_dtype_name(tensor.dtype) for tensor in io}


def device_facts() -> dict:
    import tensorrt
    import torch_tensorrt

    major, minor = torch.cuda.get_device_capability(0)
    return {"tensorrt_version": tensorrt.__version__,
            "torch_tensorrt_version": torch_tensorrt.__version__,
            "torch_version": torch.__version__, "cuda_version": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


