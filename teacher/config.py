"""The teacher recipe's settings; presets in configs/teacher/*.yaml fill them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgener.runtime.spans import SHAPES as SPAN_SHAPES
from edgener.runtime.tags import SCHEMES
from edgener.training.config import ConfigError, check_at_least, check_choice, check_fraction
from edgener.training.datasets import DATA_DIR_ENV
from edgener.training.loop import TrainSettings


@dataclass
class TeacherConfig(TrainSettings):
    # What to train on and where it goes
    model: str = "bert-base-cased"  # hub id, local folder, package:NAME, or pretrained
    dataset: str = "conll2003"  # folder, name under data_dir, or hub dataset
    data_dir: str | None = field(default_factory=lambda: os.environ.get(DATA_DIR_ENV))
    tag_scheme: str = "auto"  # auto, iob1, iob2 or bioes; converted to IOB2
    # Span files (doccano, Label Studio, CLUENER): widen a span that does not fall on the
    # runtime's word boundaries to whole words, counted in the summary (else an error)
    snap_spans: bool = False
    span_format: str = "auto"  # or doccano, label-studio, cluener: the span files' shape
    run: str | None = None  # None: the dataset's name (a dataset folder's name)
    runs_dir: str = "runs"
    # Inputs
    max_length: int = 128  # subword tokens per window, [CLS] and [SEP] included
    window_overlap: int = 32  # subword tokens shared by neighbouring windows
    case_features: bool = False  # casing classes as token types, for uncased backbones
    # Each sentence read in its document: up to context_tokens subword tokens of the
    # sentences before it and after it share its window, untagged (0: a sentence alone).
    # In training each side is left out with the chance context_dropout, so that a lone
    # sentence is still tagged well.
    context_tokens: int = 0
    # Or the sentences of a document packed into windows as one long text: context at
    # almost no extra cost (context_dropout then cuts a document's run of sentences).
    pack_documents: bool = False
    context_dropout: float = 0.0
    train_limit: int | None = None  # first N train sentences (quick mode)
    eval_limit: int | None = None  # first N valid and test sentences (quick mode)
    dropout: float | None = None  # None keeps the backbone's
    # Vocabulary coverage of train, before any training: above warn_unknown_share of its
    # subword tokens [UNK] a warning, above max_unknown_share a stop (1.0: train anyway).
    warn_unknown_share: float = 0.01
    max_unknown_share: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 3, "max_length")  # [CLS], [SEP] and at least one subword
        check_at_least(self, 0, "window_overlap", "context_tokens")
        check_fraction(self, "context_dropout")
        if self.context_tokens and self.pack_documents:
            raise ConfigError("context_tokens and pack_documents are two ways to read a "
                              "sentence in its document: set one")
        check_at_least(self, 1, "train_limit", "eval_limit")
        check_fraction(self, "dropout")
        check_at_least(self, 0, "warn_unknown_share", "max_unknown_share")
        check_choice(self, "tag_scheme", SCHEMES)
        check_choice(self, "span_format", ("auto", *SPAN_SHAPES))
