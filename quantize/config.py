"""The quantization recipe's settings; presets in configs/quantize/*.yaml fill them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgener.runtime.inference import BATCH_TOKENS
from edgener.training.config import (
    ConfigError,
    check_at_least,
    check_choice,
)
from edgener.training.datasets import DATA_DIR_ENV

CPU_VARIANTS = ("onnx-fp32", "ort-fp32", "ort-int8-dynamic", "ort-int8-static", "inc-int8")
GPU_VARIANTS = ("trt-fp16", "trt-int8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class QuantizeConfig:
    run: str = "conll2003"  # reads runs/<run>/teacher and students/, writes quantized/
    runs_dir: str = "runs"
    dataset: str | None = None  # None: the one the teacher was trained on
    data_dir: str | None = field(default_factory=lambda: os.environ.get(DATA_DIR_ENV))
    models: list | None = None  # teacher and student names; None: every published model
    variants: list = field(default_factory=lambda: [*CPU_VARIANTS, *GPU_VARIANTS])
    eval_limit: int | None = None  # first N valid sentences for the F1 checks
    eval_batch_tokens: int = BATCH_TOKENS  # padded positions per model call, as served
    invariance_sentences: int = 256  # valid sentences of the batch-invariance check
    threads: int | None = None  # ONNX Runtime and torch threads; None: all cores
    # Budget: the largest drop of valid F1 against the FP32 ONNX reference, relative
    # (0.01: an artifact keeps at least 99% of the reference F1).
    max_f1_drop: float = 0.01
    # FP32 export
    opset: int = 17
    parity_atol: float = 1e-4  # max |logit difference| against PyTorch on valid
    # Static INT8 (QDQ)
    calibration_sentences: int = 512  # from train, never valid or test
    calibration_method: str = "minmax"  # minmax, entropy or percentile
    quantize_embeddings: bool = True
    # Stricter budget for the static path's sensitivity fallback: layers stay in FP32
    # until the static model loses at most this much valid F1, relative.
    static_max_f1_drop: float = 0.005
    # neural-compressor
    inc_max_trials: int = 8
    # TensorRT (CUDA only): the engines accept (1, 1) to (trt_max_batch, trt_max_length)
    # and are tuned for (trt_opt_batch, trt_opt_length): one text at a time by default.
    trt_max_batch: int = 64
    trt_max_length: int | None = None  # None: the encoder's window length
    trt_opt_batch: int = 1
    trt_opt_length: int | None = None  # None: the median window length of valid

    def __post_init__(self) -> None:
        """Settings the stage cannot run with are refused now, in one line naming the
        setting, not after the models have loaded."""
        check_at_least(self, 1, "eval_limit", "eval_batch_tokens", "invariance_sentences",
                       "threads", "calibration_sentences", "inc_max_trials", "trt_max_batch",
                       "trt_opt_batch", "trt_opt_length")
        check_at_least(self, 3, "trt_max_length")  # [CLS], [SEP] and one subword
        check_choice(self, "calibration_method", CALIBRATION_METHODS)
        unknown = sorted(set(self.variants) - {*CPU_VARIANTS, *GPU_VARIANTS})
        if unknown:
            raise ConfigError(f"variants: unknown {', '.join(unknown)}; choose from "
                              f"{', '.join([*CPU_VARIANTS, *GPU_VARIANTS])}")
