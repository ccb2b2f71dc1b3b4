"""Lines of text to pretraining examples: packed blocks or a line a block for masked-language
modelling, or sentence pairs for next-sentence prediction; each token with whether it
begins a word, where whole words are masked."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence

from tokenizers import Tokenizer

from pretrain.corpus import word_starts
from pretrain.mlm import Example

# Where a sentence ends inside a line: after Chinese or Latin end punctuation.
SENTENCE_END = re.compile(r"(?<=[。！？!?；;])|(?<=\.)\s+")
Token = tuple[int, int]  # (id, 1 where it begins a word)


def tokens_of(pieces: Tokenizer, texts: Sequence[str],
              segment: Callable[[str], Iterable[str]] | None, whole_words: bool
              ) -> list[list[Token]]:
    """Each text's tokens (no special tokens), with whether each begins a word."""
    tokenized = []
    for text, encoding in zip(texts, pieces.encode_batch(list(texts), add_special_tokens=False),
                              strict=True):
        starts = word_starts(text, segment) if whole_words else set()
        tokenized.append([(token, int(start in starts))
                          for token, (start, _) in zip(encoding.ids, encoding.offsets,
                                                       strict=True)])
    return tokenized


def sentence_tokens(pieces: Tokenizer, lines: Sequence[str],
                    segment: Callable[[str], Iterable[str]] | None, whole_words: bool
                    ) -> list[list[list[Token]]]:
    """Each line as its sentences, each sentence as its tokens (see tokens_of)."""
    sentences = [split_sentences(line) for line in lines]
    flat = tokens_of(pieces, [s for line in sentences for s in line], segment, whole_words)
    documents, start = [], 0
    for line in sentences:
        documents.append(flat[start:start + len(line)])
        start += len(line)
    return documents


def blocks(lines: list[list[Token]], block_size: int, cls: int, sep: int, line_by_line: bool,
           whole_words: bool) -> list[Example]:
    """Blocks of at most `block_size` tokens, [CLS] first and [SEP] last. Packed (the
    default): the lines' tokens one stream, a [SEP] after each line, cut into full blocks
    (the last one shorter). Line by line: a line a block, cut to fit."""
    body = block_size - 2
    if line_by_line:
        runs = [line[:body] for line in lines if line]
    else:
        stream = [token for line in lines if line for token in (*line, (sep, 1))]
        runs = [stream[start:start + body] for start in range(0, len(stream), body)]
    return [example([(cls, 1), *run, (sep, 1)], whole_words) for run in runs]


def sentence_pairs(lines: list[list[list[Token]]], block_size: int, cls: int, sep: int,
                   whole_words: bool, seed: int) -> list[Example]:
    """Next-sentence prediction examples, as BERT makes them: each line (a document) cut
    into runs of sentences of about `block_size` tokens, each run split at a sentence
    boundary into A and B; half the time B is replaced by sentences of another line."""
    rng = random.Random(seed)
    target = block_size - 3  # [CLS] A [SEP] B [SEP]
    examples = []
    for index, sentences in enumerate(lines):
        for run in runs_of(sentences, target):
            if len(run) == 1:  # one long sentence: its halves
                half = max(1, len(run[0]) // 2)
                run = [run[0][:half], run[0][half:]]
            cut = rng.randint(1, len(run) - 1)
            first = [token for sentence in run[:cut] for token in sentence]
            second = [token for sentence in run[cut:] for token in sentence]
            is_next = 1
            if len(lines) > 1 and rng.random() < 0.5:
                other = rng.choice([i for i in range(len(lines)) if i != index and lines[i]]
                                   or [index])
                start = rng.randrange(len(lines[other]))
                second = [t for sentence in lines[other][start:] for t in sentence]
                is_next = int(other == index)
            first, second = fit_pair(first, second, target)
            if first and second:
                tokens = [(cls, 1), *first, (sep, 1), *second, (sep, 1)]
                pair = example(tokens, whole_words)
                pair.types = [0] * (len(first) + 2) + [1] * (len(second) + 1)
                pair.is_next = is_next
                examples.append(pair)
    return examples


def runs_of(sentences: list[list[Token]], target: int) -> Iterable[list[list[Token]]]:
    """Consecutive non-empty sentences, each run about `target` tokens long."""
    run: list[list[Token]] = []
    length = 0
    for sentence in sentences:
        if not sentence:
            continue
        run.append(sentence)
        length += len(sentence)
        if length >= target:
            yield run
            run, length = [], 0
    if run and (len(run) > 1 or len(run[0]) > 1):
        yield run


def fit_pair(first: list[Token], second: list[Token], target: int
             ) -> tuple[list[Token], list[Token]]:
    """Trim the longer segment until both fit in `target` tokens (A from its start, B from
    its end, so that the two stay adjacent)."""
    while len(first) + len(second) > target:
        if len(first) > len(second):
            first = first[1:]
        else:
            second = second[:-1]
    return first, second


def split_sentences(line: str) -> list[str]:
    return [sentence for sentence in SENTENCE_END.split(line) if sentence.strip()]


def example(tokens: list[Token], whole_words: bool) -> Example:
    return Example([token for token, _ in tokens],
                   [start for _, start in tokens] if whole_words else None)
