"""The vocabulary a pretraining run starts from: the backbone's as it is, extended with what
the corpus holds and it lacks, or a WordPiece vocabulary learned from the corpus alone.

An extended vocabulary keeps every old token at its old id, with the new ones after them,
and lives in tokenizer.json as plain WordPiece entries: the lean runtime (tokenizers
alone) reads it like any other.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import BertPreTrainedModel, PreTrainedTokenizerFast

from edgener.runtime.text import CJK

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION = "##"


def fast_tokenizer(backend: Tokenizer, like: PreTrainedTokenizerFast | None = None,
                   ) -> PreTrainedTokenizerFast:
    """A transformers tokenizer over `backend`, with BERT's special tokens (or those of
    `like`), so that save_pretrained writes tokenizer.json and tokenizer_config.json."""
    names = ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token")
    special = ({name: getattr(like, name) for name in names} if like is not None else
               dict(zip(names, ("[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"), strict=True)))
    limit = {"model_max_length": like.model_max_length} if like is not None else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special, **limit)


def unreadable_words(backend: Tokenizer, lines: Sequence[str]) -> Counter[str]:
    """Words (as the tokenizer's normalizer and pre-tokenizer make them) that the vocabulary
    cannot spell without [UNK], with their counts."""
    unk = backend.model.unk_token
    words: Counter[str] = Counter()
    for line in lines:
        normalized = backend.normalizer.normalize_str(line) if backend.normalizer else line
        words.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))
    return Counter({word: count for word, count in words.items()
                    if unk in [token.value for token in backend.model.tokenize(word)]})


def extension(backend: Tokenizer, lines: Sequence[str], min_count: int,
              max_pieces: int) -> list[str]:
    """What to add for `lines`: every CJK character seen at least `min_count` times that
    the vocabulary lacks (CJK is written a character a word), and up to `max_pieces`
    WordPiece pieces learned on the other words it cannot spell."""
    unreadable = unreadable_words(backend, lines)
    characters = sorted((word for word, count in unreadable.items()
                         if len(word) == 1 and CJK.match(word) and count >= min_count),
                        key=lambda word: -unreadable[word])
    others = {word: count for word, count in unreadable.items() if not CJK.search(word)}
    pieces: list[str] = []
    if others:
        learner = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(
            vocab_size=max_pieces + 1000, min_frequency=min_count, show_progress=False,
            special_tokens=[], continuing_subword_prefix=CONTINUATION)
        # Each word repeated as often as it occurs: the trainer counts what it is given.
        learner.train_from_iterator((word for word, count in others.items()
                                     for _ in range(count)), trainer)
        vocabulary = backend.get_vocab()
        learned = sorted(learner.get_vocab().items(), key=lambda item: item[1])
        pieces = [piece for piece, _ in learned if piece not in vocabulary][:max_pieces]
    return characters + pieces


def extended(tokenizer: PreTrainedTokenizerFast, added: Sequence[str]
             ) -> PreTrainedTokenizerFast:
    """`tokenizer` with `added` appended to its WordPiece vocabulary: every old id kept."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocabulary = state["model"]["vocab"]
    next_id = 1 + max([*vocabulary.values(),
                       *(token["id"] for token in state.get("added_tokens", []))])
    for offset, token in enumerate(added):
        vocabulary[token] = next_id + offset
    return fast_tokenizer(Tokenizer.from_str(json.dumps(state)), like=tokenizer)


def learned(lines: Sequence[str], vocab_size: int, lowercase: bool) -> PreTrainedTokenizerFast:
    """A BERT WordPiece tokenizer learned from `lines` alone (BERT from scratch)."""
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase,
                                                    handle_chinese_chars=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix=CONTINUATION)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2,
                                        show_progress=False, special_tokens=list(SPECIAL_TOKENS),
                                        continuing_subword_prefix=CONTINUATION)
    backend.train_from_iterator(lines, trainer)
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return fast_tokenizer(backend)


def extend(model: BertPreTrainedModel, tokenizer: PreTrainedTokenizerFast,
           lines: Sequence[str], min_count: int, max_pieces: int, seed: int
           ) -> tuple[PreTrainedTokenizerFast, list[str]]:
    """Add to `tokenizer` and `model` what `lines` hold and the vocabulary lacks (see
    `extension`): new embedding rows started by `init_new_rows`, the tied output layer with
    them, and the new tokens' output bias at the old tokens' mean. Returns the extended
    tokenizer and the tokens added."""
    added = extension(tokenizer.backend_tokenizer, lines, min_count, max_pieces)
    old_size = model.get_input_embeddings().num_embeddings
    wider = extended(tokenizer, added)
    model.resize_token_embeddings(len(wider), mean_resizing=False)
    init_new_rows(model.get_input_embeddings(), tokenizer, added, old_size, seed)
    with torch.no_grad():
        bias = model.cls.predictions.bias
        bias[old_size:] = bias[:old_size].mean()
    return wider, added


@torch.no_grad()
def init_new_rows(embeddings: torch.nn.Embedding, old: PreTrainedTokenizerFast,
                  added: Sequence[str], old_size: int, seed: int) -> None:
    """Start each added token's row where the old model already points: a CJK character at
    the mean of the old single-CJK-character rows (or of all rows, where there are none);
    another piece at the mean of the old pieces that spell it. Noise at the old rows' own
    spread, dimension by dimension, keeps the new rows as far apart as old ones are: at a
    tenth of it, 5,000 new characters began as near copies of one row and one epoch of MLM
    on People's Daily left them at a third of the old rows' spread."""
    weight = embeddings.weight
    rows = weight[:old_size]
    characters = [index for token, index in old.get_vocab().items()
                  if index < old_size and len(token) == 1 and CJK.match(token)]
    character_mean = rows[characters].mean(0) if characters else rows.mean(0)
    generator = torch.Generator().manual_seed(seed)
    spread = rows.std(0)
    for offset, token in enumerate(added):
        if len(token) == 1 and CJK.match(token):
            start = character_mean
        else:
            ids = [i for i in old.backend_tokenizer.encode(
                token.removeprefix(CONTINUATION), add_special_tokens=False).ids
                if i != old.unk_token_id]
            start = rows[ids].mean(0) if ids else rows.mean(0)
        noise = torch.randn(weight.shape[1], generator=generator) * spread
        weight[old_size + offset] = start + noise.to(weight.dtype)
