"""The teacher recipe's settings; presets in configs/teacher/*.yaml fill them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgener.data import DATA_DIR_ENV


@dataclass
class TeacherConfig:
    # What to train on and where it goes
    model: str = "bert-base-cased"  # hub id, local folder, or package:NAME
    dataset: str = "conll2003"  # folder, name under data_dir, or hub dataset
    data_dir: str | None = field(default_factory=lambda: os.environ.get(DATA_DIR_ENV))
    tag_scheme: str = "auto"  # auto, iob1, iob2 or bioes; converted to IOB2
    run: str = "conll2003"
    runs_dir: str = "runs"
    # Inputs
    max_length: int = 128  # subword tokens per window, [CLS] and [SEP] included
    window_overlap: int = 32  # subword tokens shared by neighbouring windows
    case_features: bool = False  # casing classes as token types, for uncased backbones
    train_limit: int | None = None  # first N train sentences (quick mode)
    eval_limit: int | None = None  # first N valid and test sentences (quick mode)
    # Optimisation
    epochs: int = 3
    batch_size: int = 32  # global: split across torchrun processes
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    dropout: float | None = None  # None keeps the backbone's
    group_by_length: bool = True
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16
    seed: int = 42
    # Housekeeping
    eval_batch_size: int = 64
    checkpoint_every: int = 200  # optimiser steps between resumable checkpoints
    threads: int | None = None  # torch threads per process; None: cores / processes
