"""Raw text to words, CoNLL-style, keeping each word's character offsets.

The models were trained on CoNLL tokens (punctuation split off, "U.S." and "1996-08-22"
kept whole), so raw text is split the same way before it meets the subword tokenizer.
"""

from __future__ import annotations

import re
from typing import NamedTuple

WORD = re.compile(
    r"""
    (?:[^\W\d_]\.){2,}              # abbreviations: U.S., e.g.
    | \d+(?:[.,:/-]\d+)*(?![^\W_])   # numbers, dates, times: 1,000.5 1996-08-22 10:30
    | [^\W_]+(?:-[^\W_]+)*           # words and letter-digit runs, inner hyphens kept: 3M
    | ['’][^\W\d_]+                  # clitics split off as in CoNLL: 's 're
    | \S                             # anything else, one character: punctuation, emoji
    """,
    re.VERBOSE,
)
# Scripts written without spaces: each character is a word (as Chinese NER corpora are).
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


# A word made only of these ends a sentence (with the closing quotes and brackets after
# it); abbreviations such as "U.S." are one word of their own, so they end nothing.
SENTENCE_ENDS = frozenset(".!?。！？…")
CLOSERS = frozenset("\"'”’)]）」』》")


class Word(NamedTuple):  # a tuple: made once per word of every request
    text: str
    start: int  # character offsets in the original string, end exclusive
    end: int


def split_words(text: str) -> list[Word]:
    if not CJK.search(text):  # the common case: one pass, no per-token script check
        return [Word(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]
    words = []
    for match in WORD.finditer(text):
        token, start = match.group(), match.start()
        if CJK.search(token):
            words += _split_cjk(token, start)
        else:
            words.append(Word(token, start, match.end()))
    return words


def sentence_spans(words: list[Word]) -> list[tuple[int, int]]:
    """(start, end) word indices of each sentence of a text's words: a sentence ends after
    a word of sentence-ending punctuation and the closing quotes that follow it."""
    spans, start, index = [], 0, 0
    while index < len(words):
        index += 1
        if set(words[index - 1].text) <= SENTENCE_ENDS:
            while index < len(words) and set(words[index].text) <= CLOSERS:
                index += 1
            spans.append((start, index))
            start = index
    if start < len(words):
        spans.append((start, len(words)))
    return spans


def _split_cjk(token: str, offset: int) -> list[Word]:
    """Each CJK character alone; runs of other characters inside the token stay together."""
    words, run_start = [], None
    for i, char in enumerate(token):
        if CJK.match(char):
            if run_start is not None:
                words.append(Word(token[run_start:i], offset + run_start, offset + i))
                run_start = None
            words.append(Word(char, offset + i, offset + i + 1))
        elif run_start is None:
            run_start = i
    if run_start is not None:
        words.append(Word(token[run_start:], offset + run_start, offset + len(token)))
    return words
