"""Extra transfer text made from the train split by mention replacement.

A small student learns the teacher's function better from more inputs than the labelled
set holds (TinyBERT's augmentation argument). Offline there is no other in-domain text, so
each copy of the train split swaps every entity mention for a random train mention of the
same type; the teacher then labels the new sentences softly, so no gold tag is needed.
"""

from __future__ import annotations

import random
from collections import defaultdict

from edgener.runtime.conll import Sentence
from edgener.runtime.tags import entity_spans


def mention_replaced(sentences: list[Sentence], copies: int, seed: int) -> list[list[Sentence]]:
    """`copies` rewrites of the sentences that hold an entity, mentions swapped by type, one
    list a copy; each keeps its document, so a copy is read in context as train is. The
    draws are seeded, so fewer copies give a prefix."""
    with_entities = [(s, spans) for s in sentences if (spans := entity_spans(s.tags))]
    mentions: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for sentence, spans in with_entities:
        for kind, start, end in spans:
            mentions[kind].append(tuple(sentence.words[start:end]))
    rng = random.Random(seed)
    rewritten = []
    for _ in range(copies):
        rewritten.append([])
        for sentence, spans in with_entities:
            words, tags, last = [], [], 0
            for kind, start, end in spans:
                mention = rng.choice(mentions[kind])
                words += [*sentence.words[last:start], *mention]
                tags += [*sentence.tags[last:start], f"B-{kind}"]
                tags += [f"I-{kind}"] * (len(mention) - 1)
                last = end
            rewritten[-1].append(Sentence(words + sentence.words[last:],
                                          tags + sentence.tags[last:],
                                          document=sentence.document))
    return rewritten
