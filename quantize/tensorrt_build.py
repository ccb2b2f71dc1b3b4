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

Both artifacts hold engines for one GPU model and one TensorRT version; the manifest
records both, and a trt-int8 folder ships the engine's QDQ source (model.qdq.onnx) so that
`edge-ner build-engine` can rebuild it on another device (edgener.training.publish).

The engines are tuned for the report's case, one text at a time: the optimization profile's
optimum is batch 1 at the median window length of the valid split (trt_opt_batch and
trt_opt_length change it). In trt-int8 the regions the Q/DQ pairs leave out (LayerNorm,
GELU, softmax, residual adds) run in FP16, unless that costs more valid F1 than the budget
allows; then they are built again in FP32.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

import onnx
import torch

from edgener.backends.engines import (
    ENGINE,
    ENGINE_SOURCE,
    ShapeProfile,
    build_engine,
    machine_facts,
)
from edgener.backends.tensorrt import (
    PROGRAM_INPUT_DTYPE,
    TensorRTEngineBackend,
    TorchTensorRTBackend,
)
from edgener.backends.torch_eager import TokenLogits
from edgener.runtime.artifacts import ArtifactError
from edgener.runtime.backend import MODEL_INPUTS
from edgener.training.config import ConfigError
from quantize import ort_quant
from quantize.config import GPU_VARIANTS, QuantizeConfig
from quantize.source import Built, Source

PACKAGES = ("tensorrt", "torch_tensorrt")
INSTALL_HINT = "pip install -e '.[tensorrt]'"
# torch_tensorrt.dynamo.CompilationSettings fields set when the installed release has them.
# Explicit typing makes TensorRT keep the FP16 the model is cast to (older releases default
# to weak typing, where TensorRT may pick FP32 kernels); the SDPA converter's causal-bias
# shortcut would be wrong for BERT's padding mask, should any attention reach it.
WANTED_COMPILE_SETTINGS = {"use_explicit_typing": True, "attn_bias_is_causal": False}


def shape_profile(config: QuantizeConfig, window_length: int, median_length: int,
                  position_limit: int | None = None) -> ShapeProfile:
    """min (1, 1), max (trt_max_batch, trt_max_length or the encoder's window length), opt
    (trt_opt_batch, trt_opt_length or `median_length`): the shape most calls have when
    texts come one at a time, as the report's latency and a service at low load see them."""
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
    opt = (config.trt_opt_batch, config.trt_opt_length or min(median_length, max_length))
    if not (1 <= opt[0] <= max_batch and 1 <= opt[1] <= max_length):
        raise ConfigError(f"trt_opt_batch and trt_opt_length {opt} must lie within the "
                          f"engine's shapes, (1, 1) to ({max_batch}, {max_length})")
    return ShapeProfile((1, 1), opt, (max_batch, max_length))


def median_window_length(source: Source, sentences: list) -> int:
    """The median length in tokens of the windows of `sentences`, [CLS] and [SEP] included."""
    windows = source.encoder.encode_all([s.words for s in sentences],
                                        documents=[s.document for s in sentences])
    return round(statistics.median(len(w.input_ids) for w in windows)) if windows else 1


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
          work: Path, f1_of: Callable[[object], float], min_f1: float) -> Built:
    """Build `variant` (trt-fp16 or trt-int8) for `source`. Its runtime reads the artifact
    back from disk, so that what is scored is what is published; `f1_of(backend)` is a
    backend's valid F1, which trt-int8's FP16 regions must keep at `min_f1` or above.
    Raises ArtifactError with tensorrt_available()'s reason where CUDA or TensorRT is
    missing."""
    if variant not in GPU_VARIANTS:
        raise ValueError(f"{variant!r} is not a TensorRT variant; known: "
                         f"{', '.join(GPU_VARIANTS)}")
    available, reason = tensorrt_available()
    if not available:
        raise ArtifactError(f"{variant}: {reason}")
    profile = shape_profile(config, source.encoder.max_length,
                            median_window_length(source, splits["valid"]),
                            getattr(source.model.config, "max_position_embeddings", None))
    out = work / variant
    out.mkdir(parents=True, exist_ok=True)
    if variant == "trt-fp16":
        return build_fp16(source, profile, out)
    return build_int8(source, config, plain, splits, profile, out, f1_of, min_f1)


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
                            "shapes": profile.as_dict(), "compile_settings": settings,
                            "torch_tensorrt_version": torch_tensorrt.__version__,
                            **machine_facts()}}
    return Built({"model.ep": path}, "torch-tensorrt", "fp16",
                 TorchTensorRTBackend.from_file(path, profile), details)


def build_int8(source: Source, config: QuantizeConfig, plain: Path, splits: dict,
               profile: ShapeProfile, out: Path, f1_of: Callable[[object], float],
               min_f1: float) -> Built:
    """The QDQ model with its float regions in FP16, built into an engine; if TensorRT
    cannot build that or it misses min_f1 on valid, the same model with FP32 regions."""
    qdq = out / "fp32-regions.qdq.onnx"
    sentences = quantize_for_tensorrt(source, config, plain, splits, qdq)
    half = out / ENGINE_SOURCE
    engine = out / ENGINE
    half_f1 = None
    try:
        fp16_regions(qdq, half)
        io = build_engine(half, engine, profile)
        runtime = TensorRTEngineBackend.from_file(engine, profile)
        half_f1 = f1_of(runtime)
        rejected = None if half_f1 >= min_f1 else (
            f"valid F1 {100 * half_f1:.2f} is under the budget's {100 * min_f1:.2f}")
    except Exception as error:  # an FP16 graph this TensorRT cannot build or run
        rejected = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    regions = "fp32" if rejected else "fp16"
    if rejected:
        half.unlink(missing_ok=True)
        qdq.rename(half)
        io = build_engine(half, engine, profile)
        runtime = TensorRTEngineBackend.from_file(engine, profile)
    details = {"engine": f"serialized TensorRT engine ({ENGINE}), built from {ENGINE_SOURCE} "
                         f"(`edge-ner build-engine` rebuilds it on another GPU)",
               "quantization": "static QDQ, TensorRT explicit quantization",
               "calibration": {"method": config.calibration_method,
                               "sentences": sentences, "split": "train"},
               "weights": "int8 symmetric per-channel", "activations": "int8 symmetric",
               "embeddings_quantized": False,
               f"{regions}_ops": ort_quant.float_ops(half),
               "tensorrt": {"precision": "int8",
                            "typing": f"strong: int8 where the Q/DQ pairs say, {regions} "
                                      "elsewhere",
                            "float_regions": regions, "fp16_regions_valid_f1": half_f1,
                            "fp16_regions_rejected": rejected, "io_dtypes": io,
                            "shapes": profile.as_dict(), **machine_facts()}}
    return Built({ENGINE: engine, ENGINE_SOURCE: half}, "tensorrt", "int8", runtime, details)


def fp16_regions(qdq: Path, target: Path) -> None:
    """The QDQ model with every float tensor outside the Q/DQ pairs in FP16, the logits
    output kept FP32. Scales turn FP16 too, so each DequantizeLinear gives FP16 directly,
    which needs opset 19 (ONNX's version converter takes the graph there)."""
    from onnx import version_converter
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(qdq))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 19:
        model = version_converter.convert_version(model, 19)
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(target))


def quantize_for_tensorrt(source: Source, config: QuantizeConfig, plain: Path, splits: dict,
                          target: Path) -> int:
    """The QDQ model TensorRT builds the INT8 engine from, calibrated on the first
    calibration_sentences train sentences (never valid or test); returns how many."""
    train = splits["train"][: config.calibration_sentences]
    reader = ort_quant.CalibrationReader(source.encoder, train)
    # Embedding tables stay FP32: TensorRT's int8 kernels are the GEMMs, and a Gather
    # would read an int8 table through a DequantizeLinear that only gives back FP32.
    ort_quant.quantize_static_qdq(plain, target, reader, config.calibration_method,
                                  quantize_embeddings=False, symmetric_activations=True)
    return reader.sentences
