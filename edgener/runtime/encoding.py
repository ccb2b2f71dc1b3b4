"""Words to model inputs: subword alignment, casing features, overlapping windows, batches.

The first subword of each word carries the word's label. A sentence longer than the
model's window is split into overlapping windows; every word is *owned* by exactly one
window (the one where it sits furthest from an edge), so prediction gives one tag a word
and no word is ever truncated away.

A sentence can be read in its document, two ways. With `context_tokens`, its window also
holds up to that many subword tokens of the sentences before it and after it (whole words,
as room allows), which the model sees but which take no label and no prediction from this
window: every sentence gets context on both sides, at the cost of reading its neighbours
again. With `pack_documents`, consecutive sentences of a document are packed into the
same windows, as one long text: context at almost no extra cost, less of it for the words
near a window's edge.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from edgener.runtime.errors import UserError

IGNORE_INDEX = -100

# Words whose subwords and casing class are remembered (a vocabulary, not a corpus).
WORD_CACHE_SIZE = 200_000

# Casing classes, fed to the model as token_type_ids when the backbone is uncased.
CASE_CLASSES = ("other", "lower", "title", "upper", "mixed")


@lru_cache(maxsize=WORD_CACHE_SIZE)
def case_class(word: str) -> int:
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return 0
    if all(c.islower() for c in letters):
        return 1
    if all(c.isupper() for c in letters):
        return 3 if len(letters) > 1 else 2
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 2
    return 4


@dataclass
class Window:
    """One model input: a run of words from one sentence, with [CLS]/[SEP] around it."""

    sentence: int
    input_ids: list[int]
    token_type_ids: list[int]
    labels: list[int]  # label id at each word's first subword, IGNORE_INDEX elsewhere
    owned_words: list[int]  # sentence word index at owned first subwords, -1 elsewhere


@dataclass
class WindowSpec:
    start: int  # first word in the window
    end: int  # one past the last word
    own_start: int  # words in [own_start, own_end) take their prediction from this window
    own_end: int


def plan_windows(word_lengths: Sequence[int], max_tokens: int, overlap: int) -> list[WindowSpec]:
    """Cover words with windows of at most max_tokens subwords, neighbours sharing ~overlap.

    A single word longer than max_tokens gets a window of its own (its first subword,
    which carries its label, is always kept).
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    n = len(word_lengths)
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end, used = start, 0
        while end < n and (end == start or used + word_lengths[end] <= max_tokens):
            used += word_lengths[end]
            end += 1
        spans.append((start, end))
        if end == n:
            break
        # Step back from `end` while the shared part stays within `overlap` tokens.
        next_start, shared = end, 0
        while next_start - 1 > start and shared + word_lengths[next_start - 1] <= overlap:
            next_start -= 1
            shared += word_lengths[next_start]
        start = next_start
    specs = []
    for i, (s, e) in enumerate(spans):
        own_start = 0 if i == 0 else specs[-1].own_end
        own_end = n if i == len(spans) - 1 else (spans[i + 1][0] + e + 1) // 2
        specs.append(WindowSpec(s, e, own_start, max(own_end, own_start)))
    return specs


@dataclass(frozen=True)
class SpecialTokens:
    cls: int
    sep: int
    pad: int
    unk: int


# The special tokens' names in a Hugging Face tokenizer_config.json.
SPECIAL_TOKEN_KEYS = {"cls": "cls_token", "sep": "sep_token", "pad": "pad_token",
                      "unk": "unk_token"}


class TokenizerError(UserError, ValueError):
    """A tokenizer folder that cannot give the word pieces or special tokens."""


class Encoder:
    """Turns word sequences into windows for one tokenizer and label set.

    It needs only the `tokenizers` library: the serving runtime builds it from an
    artifact's tokenizer.json (`from_folder`), the training recipes from a transformers
    tokenizer (`from_transformers`); both give the same Rust tokenizer and special ids."""

    def __init__(
        self,
        word_piecer: Tokenizer,
        special: SpecialTokens,
        labels: Sequence[str],
        max_length: int,
        window_overlap: int,
        case_features: bool,
        context_tokens: int = 0,
        pack_documents: bool = False,
    ):
        self.label_ids = {label: i for i, label in enumerate(labels)}
        self.max_length = max_length
        self.max_tokens = max_length - 2  # room for [CLS] and [SEP]
        self.window_overlap = window_overlap
        self.case_features = case_features
        self.context_tokens = context_tokens
        self.pack_documents = pack_documents
        self.cls_id, self.sep_id = special.cls, special.sep
        self.pad_id, self.unk_id = special.pad, special.unk
        # Words are encoded one pre-split call at a time, so the padding and truncation a
        # tokenizer.json may carry would cut or pad them: they are turned off (on the
        # encoder's own tokenizer, which nothing else holds).
        self.word_piecer = word_piecer
        self.word_piecer.no_padding()
        self.word_piecer.no_truncation()
        self._pieces: dict[str, list[int]] = {}
        # Subword tokens of the sentences encoded so far, and the [UNK] among them: how much
        # of its input the model's vocabulary cannot read (the server reports the share).
        self.tokens_encoded = 0
        self.unknown_encoded = 0

    @classmethod
    def from_transformers(cls, tokenizer, labels: Sequence[str], max_length: int,
                          window_overlap: int, case_features: bool,
                          context_tokens: int = 0, pack_documents: bool = False) -> Encoder:
        """From a transformers fast tokenizer (its Rust tokenizer and special ids)."""
        special = SpecialTokens(tokenizer.cls_token_id, tokenizer.sep_token_id,
                                tokenizer.pad_token_id, tokenizer.unk_token_id)
        # A copy: transformers resets its own tokenizer's padding and truncation per call.
        return cls(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()), special, labels,
                   max_length, window_overlap, case_features, context_tokens, pack_documents)

    @classmethod
    def from_folder(cls, folder: str | Path, labels: Sequence[str], max_length: int,
                    window_overlap: int, case_features: bool,
                    context_tokens: int = 0, pack_documents: bool = False) -> Encoder:
        """From a saved tokenizer's tokenizer.json and tokenizer_config.json (the files
        transformers' save_pretrained writes), without transformers."""
        folder = Path(folder)
        try:
            word_piecer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except Exception as error:  # tokenizers raises a bare Exception on a bad file
            raise TokenizerError(f"cannot read the tokenizer in {folder} "
                                 f"({str(error).splitlines()[0]})") from None
        ids = {}
        for name, key in SPECIAL_TOKEN_KEYS.items():
            token = config.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            token_id = word_piecer.token_to_id(token) if isinstance(token, str) else None
            if token_id is None:
                raise TokenizerError(f"{folder / 'tokenizer_config.json'}: no {key} in the "
                                     "tokenizer's vocabulary")
            ids[name] = token_id
        return cls(word_piecer, SpecialTokens(**ids), labels, max_length, window_overlap,
                   case_features, context_tokens, pack_documents)

    def settings(self) -> dict:
        """What a manifest records, so that a later stage rebuilds the same encoder."""
        return {"max_length": self.max_length, "window_overlap": self.window_overlap,
                "case_features": self.case_features, "context_tokens": self.context_tokens,
                "pack_documents": self.pack_documents}

    @property
    def reads_context(self) -> bool:
        """Whether a sentence's tags depend on the sentences around it."""
        return bool(self.context_tokens or self.pack_documents)

    def subwords(self, words: Sequence[str]) -> list[list[int]]:
        """Subword ids of each word; a word the tokenizer drops entirely becomes [UNK].

        A word's pieces do not depend on its neighbours (the pre-tokenizer runs within each
        word), so they are remembered per word, and the words not seen before go through
        the Rust tokenizer in one pre-split call: at batch 1 the tokenizer call otherwise
        costs a tenth of a small model's latency."""
        unseen = [w for w in dict.fromkeys(words) if w not in self._pieces]
        if unseen:
            if len(self._pieces) + len(unseen) > WORD_CACHE_SIZE:
                self._pieces.clear()
            encoded = self.word_piecer.encode(unseen, is_pretokenized=True,
                                              add_special_tokens=False)
            pieces: list[list[int]] = [[] for _ in unseen]
            for token_id, word in zip(encoded.ids, encoded.word_ids, strict=True):
                pieces[word].append(token_id)
            for word, ids in zip(unseen, pieces, strict=True):
                self._pieces[word] = ids or [self.unk_id]
        return [self._pieces[w] for w in words]

    def encode(
        self, sentence_index: int, words: Sequence[str], tags: Sequence[str] | None = None,
        before: Sequence[str] = (), after: Sequence[str] = (),
    ) -> list[Window]:
        """The windows of one sentence. `before` and `after`: the words around it in its
        document, as many as fit beside it (the nearest first), seen but not tagged; a
        sentence too long for one window is read without them."""
        pieces = self.subwords(words)
        self.tokens_encoded += sum(map(len, pieces))
        self.unknown_encoded += sum(ids.count(self.unk_id) for ids in pieces)
        cases = [case_class(w) for w in words] if self.case_features else [0] * len(words)
        room = self.max_tokens - sum(map(len, pieces))
        if room > 0 and (before or after):
            left, right = self.context(before, after, room)
            return [self.window(sentence_index, pieces, cases, tags,
                                WindowSpec(0, len(words), 0, len(words)), left, right)]
        return [self.window(sentence_index, pieces, cases, tags, spec)
                for spec in plan_windows([len(p) for p in pieces], self.max_tokens,
                                         self.window_overlap)]

    def context(self, before: Sequence[str], after: Sequence[str], room: int
                ) -> tuple[list[tuple[list[int], int]], list[tuple[list[int], int]]]:
        """(pieces, casing class) of the context words that fit: up to context_tokens each
        side, within `room`, which the sides share evenly unless one has less to give."""
        def words_of(side: Sequence[str]) -> list[tuple[list[int], int]]:
            return [(ids, case_class(w) if self.case_features else 0)
                    for w, ids in zip(side, self.subwords(side), strict=True)]

        def take(side: list[tuple[list[int], int]], budget: int) -> list:
            taken, used = [], 0
            for ids, case in side:  # nearest first
                if used + len(ids) > budget:
                    break
                taken.append((ids, case))
                used += len(ids)
            return taken

        near_before, near_after = words_of(before[::-1]), words_of(after)
        wanted_after = min(self.context_tokens, sum(len(ids) for ids, _ in near_after))
        left = take(near_before, min(self.context_tokens, max(room // 2, room - wanted_after)))
        used_left = sum(len(ids) for ids, _ in left)
        right = take(near_after, min(self.context_tokens, room - used_left))
        return left[::-1], right

    def window(self, sentence_index: int, pieces: list[list[int]], cases: list[int],
               tags: Sequence[str] | None, spec: WindowSpec,
               left: Sequence[tuple[list[int], int]] = (),
               right: Sequence[tuple[list[int], int]] = ()) -> Window:
        input_ids, types = [self.cls_id], [0]
        for ids, case in left:
            input_ids += ids
            types += [case] * len(ids)
        labels, owned = [IGNORE_INDEX] * len(input_ids), [-1] * len(input_ids)
        for w in range(spec.start, spec.end):
            ids = pieces[w][: self.max_tokens]
            input_ids += ids
            types += [cases[w]] * len(ids)
            label = self.label_ids[tags[w]] if tags is not None else IGNORE_INDEX
            labels += [label] + [IGNORE_INDEX] * (len(ids) - 1)
            is_owned = spec.own_start <= w < spec.own_end
            owned += [w if is_owned else -1] + [-1] * (len(ids) - 1)
        for ids, case in right:
            input_ids += ids
            types += [case] * len(ids)
        input_ids.append(self.sep_id)
        types.append(0)
        labels += [IGNORE_INDEX] * (len(input_ids) - len(labels))
        owned += [-1] * (len(input_ids) - len(owned))
        return Window(sentence_index, input_ids, types, labels, owned)

    def encode_all(
        self, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None = None,
        documents: Sequence[int] | None = None, context_dropout: float = 0.0, seed: int = 0,
    ) -> list[Window]:
        """The windows of every sentence. With context_tokens and `documents` (a document
        id a sentence, in reading order), each sentence is read with the sentences around
        it in its document; without `documents` every sentence stands alone. In training,
        `context_dropout` drops each side's context of a sentence with that chance (seeded),
        so that the model also learns to tag a lone sentence. With pack_documents, the
        windows are those of each run of consecutive sentences of one document read as one
        text (`packed`), each run cut at a sentence boundary with the chance
        `context_dropout`; their `sentence` is the run's index."""
        if self.pack_documents and documents is not None:
            runs = packed(sentences, documents, context_dropout, seed)
            return self.encode_all(joined(sentences, runs),
                                   None if tags is None else joined(tags, runs))
        rng = random.Random(seed)
        windows = []
        for i, words in enumerate(sentences):
            before: list[str] = []
            after: list[str] = []
            if self.context_tokens and documents is not None:
                before, after = neighbours(sentences, documents, i, self.context_tokens)
                if context_dropout and rng.random() < context_dropout:
                    before = []
                if context_dropout and rng.random() < context_dropout:
                    after = []
            windows += self.encode(i, words, tags[i] if tags is not None else None,
                                   before, after)
        return windows


def packed(sentences: Sequence[Sequence[str]], documents: Sequence[int],
           cut_chance: float = 0.0, seed: int = 0) -> list[tuple[int, int]]:
    """(start, end) sentence indices of each run of consecutive sentences of one document,
    each boundary inside a document also cut with `cut_chance` (seeded)."""
    rng = random.Random(seed)
    runs, start = [], 0
    for index in range(1, len(sentences) + 1):
        if index == len(sentences) or documents[index] != documents[index - 1] or \
                (cut_chance and rng.random() < cut_chance):
            runs.append((start, index))
            start = index
    return runs


def joined(items: Sequence[Sequence[str]], runs: Sequence[tuple[int, int]]
           ) -> list[list[str]]:
    """The items of each (start, end) run of sentences, one list a run."""
    return [[item for s in range(a, b) for item in items[s]] for a, b in runs]


def neighbours(sentences: Sequence[Sequence[str]], documents: Sequence[int], index: int,
               most: int) -> tuple[list[str], list[str]]:
    """The words before and after sentence `index` in its document: at most `most` words
    each side (a word is at least one token, so no more are ever needed)."""
    before: list[str] = []
    k = index - 1
    while k >= 0 and documents[k] == documents[index] and len(before) < most:
        before[:0] = sentences[k]
        k -= 1
    after: list[str] = []
    k = index + 1
    while k < len(sentences) and documents[k] == documents[index] and len(after) < most:
        after += sentences[k]
        k += 1
    return before[-most:], after[:most]


def pad_arrays(windows: Sequence[Window], pad_id: int,
               with_labels: bool = False) -> dict[str, np.ndarray]:
    """Pad a batch of windows to its longest member (dynamic padding): the model inputs
    (and the labels) as int64 arrays."""
    shape = (len(windows), max(len(w.input_ids) for w in windows))
    batch = {"input_ids": np.full(shape, pad_id, np.int64),
             "attention_mask": np.zeros(shape, np.int64),
             "token_type_ids": np.zeros(shape, np.int64)}
    if with_labels:
        batch["labels"] = np.full(shape, IGNORE_INDEX, np.int64)
    for row, window in enumerate(windows):
        n = len(window.input_ids)
        batch["input_ids"][row, :n] = window.input_ids
        batch["attention_mask"][row, :n] = 1
        batch["token_type_ids"][row, :n] = window.token_type_ids
        if with_labels:
            batch["labels"][row, :n] = window.labels
    return batch


def train_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool,
) -> list[list[int]]:
    """One epoch's batches of indices, the same for the same (seed, epoch) on every run.

    With length grouping, indices are shuffled, cut into pools of 50 batches, sorted by
    length within each pool, batched, and the batches shuffled: little padding, yet a
    different mix every epoch.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        pool = batch_size * 50
        order = [
            i
            for p in range(0, len(order), pool)
            for i in sorted(order[p : p + pool], key=lambda i: -lengths[i])
        ]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def token_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of inputs in batches for inference: sorted longest first across all of them,
    then cut so that a batch padded to its longest holds at most `max_tokens` positions
    (an input longer than that alone). Padding stays small, and a call's memory is bounded
    by the budget, not by how long its inputs happen to be."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        # Sorted longest first: a batch's first input sets its padded length.
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def gather_word_logits(
    windows: Sequence[Window],
    window_logits: Iterator[tuple[int, np.ndarray]],
    sentence_lengths: Sequence[int],
) -> list[np.ndarray]:
    """Collect each word's logits from the window that owns it.

    window_logits yields (window index, logits of shape [tokens, labels]).
    """
    out: list[np.ndarray | None] = [None] * len(sentence_lengths)
    for index, logits in window_logits:
        window = windows[index]
        sentence = window.sentence
        if out[sentence] is None:
            out[sentence] = np.zeros((sentence_lengths[sentence], logits.shape[-1]), np.float32)
        positions = [i for i, word in enumerate(window.owned_words) if word >= 0]
        out[sentence][[window.owned_words[i] for i in positions]] = logits[positions]
    return [
        o if o is not None else np.zeros((0, 0), np.float32) for o in out
    ]
