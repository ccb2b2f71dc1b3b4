"""How much of a text a model's vocabulary can read.

A word the tokenizer cannot spell with its pieces becomes `[UNK]`, and the model sees
nothing of it: for character-level Chinese with an English backbone, most of the input.
Measured before a model is trained on the text, and beside any score of it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgener.runtime.encoding import Encoder

TOP_UNKNOWN = 10  # the most frequent unknown words shown and recorded


@dataclass
class Coverage:
    """Words and subword tokens of a text, and how many of them the vocabulary lacks."""

    words: int = 0
    unknown_words: int = 0  # words with at least one [UNK] piece
    tokens: int = 0  # subword tokens, special tokens left out
    unknown_tokens: int = 0
    top_unknown: list[tuple[str, int]] = field(default_factory=list)  # (word, count)

    @property
    def unknown_token_share(self) -> float:
        return self.unknown_tokens / self.tokens if self.tokens else 0.0

    @property
    def unknown_word_share(self) -> float:
        return self.unknown_words / self.words if self.words else 0.0

    def as_dict(self) -> dict:
        return {"words": self.words, "unknown_words": self.unknown_words,
                "unknown_word_share": round(self.unknown_word_share, 4),
                "tokens": self.tokens, "unknown_tokens": self.unknown_tokens,
                "unknown_token_share": round(self.unknown_token_share, 4),
                "top_unknown": [[word, count] for word, count in self.top_unknown]}

    def describe(self) -> str:
        """One line: the unknown shares and the most frequent unknown words."""
        line = (f"{100 * self.unknown_token_share:.1f}% of subword tokens and "
                f"{100 * self.unknown_word_share:.1f}% of words are [UNK]")
        if self.top_unknown:
            line += " (most frequent: " + " ".join(word for word, _ in self.top_unknown) + ")"
        return line


def vocabulary_coverage(encoder: Encoder, sentences: Sequence[Sequence[str]],
                        top: int = TOP_UNKNOWN) -> Coverage:
    """How much of `sentences` (words) the encoder's vocabulary can read."""
    coverage = Coverage()
    unknown: Counter[str] = Counter()
    for words in sentences:
        for word, pieces in zip(words, encoder.subwords(words), strict=True):
            missing = pieces.count(encoder.unk_id)
            coverage.tokens += len(pieces)
            coverage.unknown_tokens += missing
            if missing:
                unknown[word] += 1
        coverage.words += len(words)
    coverage.unknown_words = sum(unknown.values())
    coverage.top_unknown = unknown.most_common(top)
    return coverage
