"""Constrained Viterbi decoding, checked by properties and against brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgener.runtime.decoding import constrained_decode, decode_all, path_probabilities

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def is_valid_iob2(tags: list[str]) -> bool:
    """Written out independently: I-X only right after B-X or I-X."""
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        if tag.startswith("I-") and previous == "O":
            return False
        previous = tag
    return True


def reference_log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    return np.log(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))


def brute_force_best(logits: np.ndarray, labels: list[str]) -> tuple[list[str], float, float]:
    """(best valid sequence, its score, the second-best valid score) by enumeration."""
    scores = reference_log_softmax(logits)
    ranked = []
    for path in itertools.product(range(len(labels)), repeat=len(logits)):
        tags = [labels[i] for i in path]
        if is_valid_iob2(tags):
            ranked.append((sum(scores[t, i] for t, i in enumerate(path)), tags))
    ranked.sort(key=lambda item: -item[0])
    second = ranked[1][0] if len(ranked) > 1 else -np.inf
    return ranked[0][1], ranked[0][0], second


def path_score(logits: np.ndarray, labels: list[str], tags: list[str]) -> float:
    scores = reference_log_softmax(logits)
    return sum(scores[t, labels.index(tag)] for t, tag in enumerate(tags))


def test_reference_validity_checker():
    assert is_valid_iob2(["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC"])
    assert not is_valid_iob2(["I-PER"])
    assert not is_valid_iob2(["O", "I-PER"])
    assert not is_valid_iob2(["B-PER", "I-LOC"])
    assert not is_valid_iob2(["B-PER", "I-PER", "I-LOC"])


@pytest.mark.parametrize("labels", [LABELS, ["I-LOC", "I-PER", "B-PER", "O", "B-LOC"]])
def test_output_is_always_valid_iob2(labels):
    rng = np.random.default_rng(7)
    i_columns = [j for j, label in enumerate(labels) if label.startswith("I-")]
    invalid_argmax = 0
    for _ in range(200):
        length = int(rng.integers(1, 16))
        logits = rng.normal(scale=3.0, size=(length, len(labels)))
        logits[:, i_columns] += 1.5  # make invalid argmax sequences common
        argmax = [labels[i] for i in logits.argmax(axis=1)]
        invalid_argmax += not is_valid_iob2(argmax)
        tags = constrained_decode(logits, labels)
        assert len(tags) == length
        assert set(tags) <= set(labels)
        assert is_valid_iob2(tags), (argmax, tags)
        assert not tags[0].startswith("I-")
        for previous, tag in itertools.pairwise(tags):
            if tag.startswith("I-"):
                assert previous != "O"
                assert previous[2:] == tag[2:]
    assert invalid_argmax > 100


def test_valid_argmax_is_returned_unchanged():
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(300):
        length = int(rng.integers(1, 12))
        logits = rng.normal(size=(length, len(LABELS))).astype(np.float32)
        argmax = [LABELS[i] for i in logits.argmax(axis=1)]
        if not is_valid_iob2(argmax):
            continue
        assert constrained_decode(logits, LABELS) == argmax
        checked += 1
    assert checked > 20


def test_valid_argmax_hand_written():
    logits = np.array(
        [
            [0.1, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # B-PER
            [0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0],  # I-PER
            [5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # O
            [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5],  # B-MISC
        ]
    )
    assert constrained_decode(logits, LABELS) == ["B-PER", "I-PER", "O", "B-MISC"]


@pytest.mark.parametrize("labels", [LABELS, ["O", "B-PER", "I-PER"]])
def test_empty_logits_give_empty_list(labels):
    assert constrained_decode(np.zeros((0, len(labels))), labels) == []


def test_invalid_argmax_fixed_at_an_earlier_word():
    labels = ["O", "B-PER", "I-PER"]
    # argmax is O I-PER (invalid). Valid options by probability:
    #   B-PER I-PER = .35 * .8 = .28 (best), O O = .6 * .1 = .06, O B-PER = .06, ...
    logits = np.log(np.array([[0.6, 0.35, 0.05], [0.1, 0.1, 0.8]]))
    assert constrained_decode(logits, labels) == ["B-PER", "I-PER"]


def test_invalid_start_replaced():
    labels = ["O", "B-PER", "I-PER"]
    # argmax I-PER O: the sentence cannot start with I-; B-PER O = .3 * .5 beats B-PER I-PER.
    logits = np.log(np.array([[0.1, 0.3, 0.6], [0.5, 0.1, 0.4]]))
    assert constrained_decode(logits, labels) == ["B-PER", "O"]


def test_type_switch_inside_entity_replaced():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    # argmax B-PER I-LOC: either B-LOC I-LOC (.3*.5=.15) or B-PER I-PER (.5*.2=.10) or
    # B-PER B-LOC (.5*.25=.125) -> B-LOC I-LOC.
    logits = np.log(np.array([[0.1, 0.5, 0.05, 0.3, 0.05], [0.03, 0.02, 0.2, 0.25, 0.5]]))
    assert constrained_decode(logits, labels) == ["B-LOC", "I-LOC"]


@pytest.mark.parametrize(
    ("labels", "max_length", "cases"),
    [
        (["O", "B-PER", "I-PER"], 6, 40),
        (["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], 4, 30),
        (["I-LOC", "B-PER", "O", "I-PER", "B-LOC"], 4, 20),
    ],
)
def test_matches_brute_force_over_valid_sequences(labels, max_length, cases):
    rng = np.random.default_rng(len(labels) * 100 + max_length)
    i_columns = [j for j, label in enumerate(labels) if label.startswith("I-")]
    invalid_argmax = 0
    for _ in range(cases):
        length = int(rng.integers(1, max_length + 1))
        logits = rng.normal(scale=2.0, size=(length, len(labels)))
        logits[:, i_columns] += 1.0
        argmax = [labels[i] for i in logits.argmax(axis=1)]
        invalid_argmax += not is_valid_iob2(argmax)
        best, best_score, second_score = brute_force_best(logits, labels)
        tags = constrained_decode(logits, labels)
        assert path_score(logits, labels, tags) == pytest.approx(best_score, abs=1e-9)
        if best_score - second_score > 1e-9:
            assert tags == best, (argmax, tags, best)
    assert invalid_argmax >= cases // 4


def test_path_probabilities_are_the_softmax_of_each_chosen_label():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=4.0, size=(6, len(LABELS))).astype(np.float32)
    logits[2] += 80.0  # large logits must not overflow
    path = [0, 3, 4, 0, 1, 2]
    expected = [np.exp(reference_log_softmax(logits - logits.max())[t, i])
                for t, i in enumerate(path)]
    np.testing.assert_allclose(path_probabilities(logits, path), expected, rtol=1e-5)


def test_decoding_many_sentences_at_once_gives_each_its_own_best_valid_path():
    """decode_all checks validity over all sentences together: a sentence whose greedy
    tags are valid must stay greedy even when the previous one ends inside an entity
    (an I- tag at a sentence start is judged against the start, not the neighbour)."""
    rng = np.random.default_rng(11)
    sentences = [rng.normal(scale=3.0, size=(n, len(LABELS))).astype(np.float32)
                 for n in (5, 0, 1, 9, 3, 0, 12)]
    ends_inside = np.zeros((2, len(LABELS)), np.float32)
    ends_inside[0, LABELS.index("B-PER")] = ends_inside[1, LABELS.index("I-PER")] = 9.0
    starts_outside = np.zeros((2, len(LABELS)), np.float32)
    starts_outside[0, LABELS.index("B-LOC")] = starts_outside[1, LABELS.index("O")] = 9.0
    sentences += [ends_inside, starts_outside]
    found = decode_all(sentences, LABELS)
    assert len(found) == len(sentences)
    for logits, (path, probabilities) in zip(sentences, found, strict=True):
        tags = [LABELS[i] for i in path]
        assert tags == constrained_decode(logits, LABELS)
        if len(logits):
            np.testing.assert_allclose(probabilities, path_probabilities(logits, path),
                                       rtol=1e-5)
        else:
            assert path == [] and probabilities == []
    assert [LABELS[i] for i in found[-1][0]] == ["B-LOC", "O"]
    assert any(not is_valid_iob2([LABELS[i] for i in logits.argmax(axis=1)])
               for logits in sentences if len(logits))
