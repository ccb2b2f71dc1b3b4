"""The report's settings; presets in configs/report/*.yaml fill them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgener.runtime.inference import BATCH_TOKENS
from edgener.training.config import check_at_least
from edgener.training.datasets import DATA_DIR_ENV


@dataclass
class ReportConfig:
    run: str = "conll2003"  # measures everything under runs/<run>/, writes report/
    runs_dir: str = "runs"
    dataset: str | None = None  # None: the one the teacher was trained on
    data_dir: str | None = field(default_factory=lambda: os.environ.get(DATA_DIR_ENV))
    threads: int = 2  # the fixed CPU thread count of every measurement
    test_limit: int | None = None  # first N test sentences for F1; None: all
    # Padded tokens per model call of the F1 and batched passes (the runtime's default).
    batch_tokens: int = BATCH_TOKENS
    latency_sentences: int = 200  # test sentences timed one at a time, spread over the split
    latency_rounds: int = 3  # rounds over them: the spread of p50 across rounds is the noise
    warmup: int = 20  # untimed calls first
    throughput_rounds: int = 2  # alternating passes over the test split, alone and batched
    baselines: bool = True  # the students trained without distillation too
    peers: bool = True  # what a user would run otherwise, built from the teacher
    artifacts: list | None = None  # names to measure (e.g. [teacher, L3-ort-int8-static])
    # On a CUDA machine: the teacher and the students on the GPU too, in FP32 (the GPU's
    # reference) and these precisions (fp16; int8: torch._int_mm W8A8, the rest FP16).
    cuda: bool = True
    cuda_precisions: list = field(default_factory=lambda: ["fp16", "int8"])
    # The recommendation is the fastest artifact whose test F1 is at most this many points
    # (F1 in %) below the eager teacher's: how much accuracy you will trade for speed.
    max_f1_drop: float = 1.5

    def __post_init__(self) -> None:
        """Settings the report cannot measure with are refused now, in one line naming the
        setting, not after the artifacts have loaded."""
        check_at_least(self, 1, "threads", "test_limit", "batch_tokens", "latency_sentences",
                       "latency_rounds", "throughput_rounds")
        check_at_least(self, 0, "warmup")
