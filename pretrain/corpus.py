"""The text to pretrain on: a file or folder of it, a paragraph or document a line, or the
dataset's own train split with its labels dropped; lines that hold a valid or test
sentence removed, and a share held out to score the masked-token loss on."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from edgener.runtime.conll import DataError, Sentence
from edgener.runtime.errors import needs_extra
from edgener.runtime.text import CJK, split_words

# A valid or test sentence is looked for by its first ANCHOR characters (whitespace
# removed): shorter ones ("Germany", "北京") say nothing about contamination.
ANCHOR = 12
SPACE = re.compile(r"\s+")


def locate(path: str | Path, data_dir: str | None) -> Path:
    """`path` as given, or, where it is relative and not found from here, under the data
    dir (so a preset can name a corpus shipped with a dataset)."""
    path = Path(path)
    if path.exists() or path.is_absolute() or data_dir is None:
        return path
    under = Path(data_dir) / path
    return under if under.exists() else path


def read_corpus(path: str | Path, limit: int | None = None) -> list[str]:
    """Non-empty lines of a text file, or of every *.txt file under a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise DataError(f"corpus {path}: a folder without .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"corpus {path}: no such file or folder")
    lines: list[str] = []
    for file in files:
        for number, raw in enumerate(file.read_bytes().split(b"\n"), start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise DataError(f"{file}:{number}: not valid UTF-8 (byte "
                                f"{raw[error.start]:#04x} at column {error.start + 1})") from None
            if line:
                lines.append(line.removeprefix("\ufeff"))
            if limit is not None and len(lines) >= limit:
                return lines
    if not lines:
        raise DataError(f"corpus {path}: no text in it (every line is empty)")
    return lines


def sentence_lines(sentences: Sequence[Sentence]) -> list[str]:
    """A dataset split as text: each sentence's words joined by spaces (BERT's
    pre-tokenizer splits CJK characters apart whether or not spaces stand between them)."""
    return [" ".join(s.words) for s in sentences if s.words]


def decontaminate(lines: list[str], held: Sequence[Sentence]) -> tuple[list[str], int]:
    """`lines` without those that hold one of the `held` (valid, test) sentences, whitespace
    ignored; and how many were removed."""
    by_anchor: dict[str, set[str]] = {}
    for sentence in held:
        text = "".join(sentence.words)
        if len(text) >= ANCHOR:
            by_anchor.setdefault(text[:ANCHOR], set()).add(text)
    kept = []
    for line in lines:
        flat = SPACE.sub("", line)
        contaminated = any(
            any(flat.startswith(text, start) for text in by_anchor[flat[start:start + ANCHOR]])
            for start in range(len(flat) - ANCHOR + 1)
            if flat[start:start + ANCHOR] in by_anchor)
        if not contaminated:
            kept.append(line)
    return kept, len(lines) - len(kept)


def hold_out(lines: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(training lines, held-out lines): a seeded random `share` of the lines held out, at
    least one where there are two or more."""
    if share <= 0 or len(lines) < 2:
        return lines, []
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    count = max(1, round(share * len(lines)))
    held = set(order[:count])
    return ([line for i, line in enumerate(lines) if i not in held],
            [line for i, line in enumerate(lines) if i in held])


def word_starts(line: str, segment: Callable[[str], Iterable[str]] | None) -> set[int]:
    """Character offsets where the words of `line` begin, for whole-word masking: words as
    the runtime splits raw text (edgener.runtime.text), except that CJK text, a character
    a word there, is grouped into the words `segment` finds (jieba's cut, say)."""
    starts = {word.start for word in split_words(line)}
    if segment is None:
        return starts
    cut, position = set(), 0
    for word in segment(line):  # a segmenter's words, in order, spell the line whole
        cut.add(position)
        position += len(word)
    return ({s for s in starts if not CJK.match(line[s])}
            | {s for s in cut if s < len(line) and CJK.match(line[s])})


def chinese_segmenter() -> Callable[[str], Iterable[str]]:
    """jieba's word segmentation (the zh extra), quiet."""
    with needs_extra("whole-word masking of Chinese text"):
        import jieba
    jieba.setLogLevel(60)
    return jieba.cut
