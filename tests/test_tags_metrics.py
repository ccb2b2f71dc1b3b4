"""Tag validation and conversion, entity spans, and entity scores checked against seqeval."""

from __future__ import annotations

import random
import warnings

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from edgener.runtime.metrics import entity_scores
from edgener.runtime.tags import detect_scheme, entity_spans, is_valid_tag, to_iob2

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

# ---------------------------------------------------------------- validation, schemes


@pytest.mark.parametrize("tag", ["O", "B-PER", "I-MISC", "E-LOC", "S-ORG", "B-PER-NAME"])
def test_valid_tags(tag):
    assert is_valid_tag(tag)


@pytest.mark.parametrize(
    "tag", ["B_PER", "X-LOC", "B-", "o", "", "O-PER", "b-PER", "B-PER X", "PER", "BB-PER"]
)
def test_invalid_tags(tag):
    assert not is_valid_tag(tag)


def test_detect_scheme():
    assert detect_scheme([["O", "B-PER"], ["S-LOC"]]) == "bioes"
    assert detect_scheme([["B-PER", "E-PER"]]) == "bioes"
    assert detect_scheme([["I-PER", "I-PER", "B-PER"], ["O"]]) == "iob1"


# ---------------------------------------------------------------- to_iob2


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], []),
        (["O", "O"], ["O", "O"]),
        # Adjacent same-type entities: IOB1 marks the second with B-.
        (["I-PER", "I-PER", "B-PER"], ["B-PER", "I-PER", "B-PER"]),
        (["I-PER", "B-PER", "I-PER"], ["B-PER", "B-PER", "I-PER"]),
        (["O", "I-LOC", "I-LOC", "O", "I-LOC"], ["O", "B-LOC", "I-LOC", "O", "B-LOC"]),
        (["I-PER", "I-LOC", "I-LOC"], ["B-PER", "B-LOC", "I-LOC"]),
        (["B-PER", "I-LOC"], ["B-PER", "B-LOC"]),
        (["I-ORG", "I-ORG", "B-ORG", "I-ORG", "O"], ["B-ORG", "I-ORG", "B-ORG", "I-ORG", "O"]),
        (["I-PER-X", "I-PER-X", "I-PER-Y"], ["B-PER-X", "I-PER-X", "B-PER-Y"]),
    ],
)
def test_to_iob2_from_iob1(tags, expected):
    assert to_iob2(tags, "iob1") == expected


@pytest.mark.parametrize(
    "tags",
    [["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"], ["O"], ["B-MISC", "B-PER", "I-PER"]],
)
def test_to_iob2_is_identity_on_valid_iob2(tags):
    assert to_iob2(tags, "iob2") == tags
    assert to_iob2(tags, "iob1") == tags


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], []),
        (
            ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "S-ORG", "S-ORG"],
            ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O", "B-ORG", "B-ORG"],
        ),
        (["B-PER", "E-PER", "S-PER"], ["B-PER", "I-PER", "B-PER"]),
        (["B-PER", "E-PER", "B-PER", "E-PER"], ["B-PER", "I-PER", "B-PER", "I-PER"]),
        (["O", "S-MISC", "O"], ["O", "B-MISC", "O"]),
    ],
)
def test_to_iob2_from_bioes(tags, expected):
    assert to_iob2(tags, "bioes") == expected


def test_to_iob2_unknown_scheme():
    with pytest.raises(ValueError):
        to_iob2(["O"], "bilou")


# ---------------------------------------------------------------- entity_spans


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], []),
        (["O", "O"], []),
        (["I-PER"], [("PER", 0, 1)]),
        (["B-PER", "I-PER", "I-PER"], [("PER", 0, 3)]),
        (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),
        (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
        (["I-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        (["B-LOC", "I-PER", "B-PER"], [("LOC", 0, 1), ("PER", 1, 2), ("PER", 2, 3)]),
        (["B-PER", "O", "I-PER"], [("PER", 0, 1), ("PER", 2, 3)]),
        (["O", "B-MISC", "I-MISC"], [("MISC", 1, 3)]),
        (["B-PER-X", "I-PER-X", "I-PER-Y"], [("PER-X", 0, 2), ("PER-Y", 2, 3)]),
    ],
)
def test_entity_spans(tags, expected):
    assert entity_spans(tags) == expected


def test_entity_spans_match_seqeval_get_entities():
    rng = random.Random(1234)
    for _ in range(300):
        tags = [rng.choice(TAGS) for _ in range(rng.randint(0, 12))]
        # seqeval: (type, start, end inclusive)
        expected = sorted((kind, start, end + 1) for kind, start, end in get_entities(tags))
        assert sorted(entity_spans(tags)) == expected, tags


# ---------------------------------------------------------------- entity_scores vs seqeval


def seqeval_reference(gold, predicted) -> tuple[dict, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overall = {
            "precision": precision_score(gold, predicted),
            "recall": recall_score(gold, predicted),
            "f1": f1_score(gold, predicted),
        }
        report = classification_report(gold, predicted, output_dict=True)
    per_type = {k: v for k, v in report.items() if not k.endswith(" avg")}
    return overall, per_type


def assert_matches_seqeval(gold, predicted):
    scores = entity_scores(gold, predicted)
    overall, per_type = seqeval_reference(gold, predicted)
    for key in ("precision", "recall", "f1"):
        assert scores[key] == pytest.approx(overall[key], abs=1e-9), (key, gold, predicted)
    assert set(scores["per_type"]) == set(per_type), (gold, predicted)
    for kind, ref in per_type.items():
        mine = scores["per_type"][kind]
        assert mine["f1"] == pytest.approx(ref["f1-score"], abs=1e-9), (kind, gold, predicted)
        assert mine["precision"] == pytest.approx(ref["precision"], abs=1e-9)
        assert mine["recall"] == pytest.approx(ref["recall"], abs=1e-9)
        assert mine["support"] == ref["support"]
    assert scores["support"] == sum(int(ref["support"]) for ref in per_type.values())


def test_entity_scores_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "I-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "I-LOC"], ["O", "B-MISC", "I-PER"]]
    # gold: PER[0,2) LOC[3,4) | MISC[1,3);  pred: PER[0,2) LOC[3,4) | MISC[1,2) PER[2,3)
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(4 / 7)
    assert scores["support"] == 3
    assert scores["per_type"]["PER"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )
    assert scores["per_type"]["LOC"] == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    )
    assert scores["per_type"]["MISC"] == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    )
    assert_matches_seqeval(gold, pred)


def test_entity_scores_nothing_predicted_and_nothing_gold():
    scores = entity_scores([["B-PER", "O"]], [["O", "O"]])
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)
    assert scores["support"] == 1
    scores = entity_scores([["O"]], [["O"]])
    assert (scores["precision"], scores["recall"], scores["f1"], scores["support"]) == (0, 0, 0, 0)
    assert scores["per_type"] == {}


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        # I- after O opens an entity, in gold and in predictions.
        ([["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]]),
        ([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]]),
        ([["I-LOC", "O", "I-LOC"]], [["B-LOC", "O", "B-LOC"]]),
        # I- of another type after B- closes the entity and opens a new one.
        ([["B-PER", "I-LOC", "O"]], [["B-PER", "B-LOC", "O"]]),
        ([["B-PER", "I-PER", "O"]], [["B-PER", "I-LOC", "O"]]),
        ([["B-MISC", "I-PER", "I-PER"]], [["B-MISC", "B-PER", "I-PER"]]),
        # Sequences ending in an entity.
        ([["O", "B-LOC", "I-LOC"]], [["O", "B-LOC", "I-LOC"]]),
        ([["O", "B-LOC", "I-LOC"]], [["O", "B-LOC", "O"]]),
        ([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]]),
        # An entity must not run across a sentence boundary.
        ([["B-PER"], ["I-PER"]], [["B-PER"], ["O"]]),
        ([["O", "B-PER"], ["I-PER", "O"]], [["O", "B-PER"], ["B-PER", "O"]]),
        # Wrong type on the right span, right type on the wrong span.
        ([["B-PER", "I-PER", "O", "B-LOC"]], [["B-LOC", "I-LOC", "O", "B-LOC"]]),
        ([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "O"]]),
        ([["B-PER", "B-PER"]], [["B-PER", "I-PER"]]),
    ],
)
def test_entity_scores_match_seqeval_on_invalid_and_edge_sequences(gold, pred):
    assert_matches_seqeval(gold, pred)


def test_entity_scores_match_seqeval_on_random_sequences():
    rng = random.Random(20240601)
    partial = 0
    for _ in range(300):
        gold, pred = [], []
        for _ in range(rng.randint(1, 4)):
            length = rng.randint(1, 10)
            gold_tags = [rng.choice(TAGS) for _ in range(length)]
            # Predictions are noisy copies of gold so that some entities match.
            noise = rng.choice([0.0, 0.2, 0.5, 1.0])
            pred_tags = [rng.choice(TAGS) if rng.random() < noise else t for t in gold_tags]
            gold.append(gold_tags)
            pred.append(pred_tags)
        assert_matches_seqeval(gold, pred)
        partial += 0 < entity_scores(gold, pred)["f1"] < 1
    assert partial > 50  # the cases are not all trivially perfect or hopeless


# ---------------------------------------------------------------- errors


def test_entity_scores_sentence_count_mismatch():
    with pytest.raises(ValueError):
        entity_scores([["O"], ["B-PER"]], [["O"]])


def test_entity_scores_tag_count_mismatch():
    with pytest.raises(ValueError, match="sentence 1"):
        entity_scores([["O"], ["B-PER", "O"]], [["O"], ["B-PER"]])
