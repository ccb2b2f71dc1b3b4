"""Entity-level precision, recall and F1: exact span and type, micro over all entities."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from edgener.runtime.tags import entity_spans


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict:
    """Scores over sentences of IOB2 tags, read with conlleval semantics.

    Returns {"precision", "recall", "f1", "support", "per_type": {TYPE: {...same}}}, every
    score a fraction in [0, 1] and support the number of gold entities.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    gold_count: Counter[str] = Counter()
    pred_count: Counter[str] = Counter()
    correct_count: Counter[str] = Counter()
    for index, (gold_tags, pred_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(
                f"sentence {index}: {len(gold_tags)} gold tags but {len(pred_tags)} predicted"
            )
        gold_spans = set(entity_spans(gold_tags))
        pred_spans = set(entity_spans(pred_tags))
        gold_count.update(kind for kind, _, _ in gold_spans)
        pred_count.update(kind for kind, _, _ in pred_spans)
        correct_count.update(kind for kind, _, _ in gold_spans & pred_spans)
    per_type = {
        kind: {**_prf(correct_count[kind], pred_count[kind], gold_count[kind]),
               "support": gold_count[kind]}
        for kind in sorted(gold_count | pred_count)
    }
    overall = _prf(sum(correct_count.values()), sum(pred_count.values()),
                   sum(gold_count.values()))
    return {**overall, "support": sum(gold_count.values()), "per_type": per_type}
