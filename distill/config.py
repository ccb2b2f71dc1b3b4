"""The distillation recipe's settings; presets in configs/distill/*.yaml fill them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgener.training.config import check_above, check_at_least, check_fraction
from edgener.training.datasets import DATA_DIR_ENV
from edgener.training.loop import TrainSettings


@dataclass
class DistillConfig(TrainSettings):
    run: str = "conll2003"  # reads runs/<run>/teacher, writes runs/<run>/students/
    runs_dir: str = "runs"
    # Where the teacher's dataset is, when its recorded folder has moved
    dataset: str | None = None  # None: the one the teacher was trained on
    data_dir: str | None = field(default_factory=lambda: os.environ.get(DATA_DIR_ENV))
    train_limit: int | None = None
    eval_limit: int | None = None
    # Students: name -> {layers, hidden_size, heads, intermediate_size, augment_copies,
    # init_from}; None keeps the teacher's width (and head size).
    students: dict = field(default_factory=dict)
    only: list | None = None  # train just these students
    baselines: bool = True  # also train each student without distillation
    # Losses (TextBrewer GeneralDistiller)
    temperature: float = 4.0
    kd_weight: float = 1.0
    hard_label_weight: float = 1.0
    hidden_loss: str = "hidden_mse"
    hidden_weight: float = 1.0
    mmd_weight: float = 0.0  # >0 adds an mmd (NST) match at each mapped layer pair
    matches: list | None = None  # replaces the derived intermediate matches
    cache_teacher: bool = True  # teacher outputs computed once, reused every epoch
    # Extra unlabeled text, one sentence a line, labelled softly by the teacher
    unlabeled_text: str | None = None
    unlabeled_limit: int | None = None
    # Where the teacher reads sentences in their documents (its context_tokens), the chance
    # that a side's context is left out of a train sentence's window, as for the teacher.
    context_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(self, "context_dropout")
        check_at_least(self, 1, "train_limit", "eval_limit", "unlabeled_limit")
        check_above(self, 0, "temperature")
        check_at_least(self, 0, "kd_weight", "hard_label_weight", "hidden_weight",
                       "mmd_weight")
