"""Tag schemes: validation, conversion to IOB2, and entity spans with conlleval semantics."""

from __future__ import annotations

import re
from collections.abc import Sequence

TAG_PATTERN = re.compile(r"^(O|[BIES]-\S+)$")
SCHEMES = ("auto", "iob1", "iob2", "bioes")


def is_valid_tag(tag: str) -> bool:
    return TAG_PATTERN.match(tag) is not None


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def detect_scheme(tag_sequences: Sequence[Sequence[str]]) -> str:
    """BIOES when any S-/E- tag occurs; otherwise IOB1/IOB2, which one conversion serves."""
    for tags in tag_sequences:
        for tag in tags:
            if tag[0] in "SE":
                return "bioes"
    return "iob1"


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Convert one sentence's tags to IOB2.

    IOB1 conversion is the identity on valid IOB2, so "iob1" also repairs IOB2 sequences
    that open an entity with I- (the way conlleval reads them).
    """
    if scheme == "bioes":
        return [("B" + t[1:]) if t[0] == "S" else ("I" + t[1:]) if t[0] == "E" else t for t in tags]
    if scheme not in ("iob1", "iob2"):
        raise ValueError(f"unknown tag scheme {scheme!r}; choose one of {SCHEMES}")
    out = []
    previous = "O"
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "I" and split_tag(previous)[1] != kind:
            tag = "B-" + kind
        out.append(tag)
        previous = tag
    return out


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities as (type, start, end) word spans, end exclusive, read as conlleval does.

    An entity starts at B-X, or at I-X that does not continue an entity of type X; it
    continues over following I-X tags.
    """
    spans = []
    kind, start = "", -1
    for i, tag in enumerate(tags):
        prefix, tag_kind = split_tag(tag)
        continues = prefix == "I" and tag_kind == kind
        if kind and not continues:
            spans.append((kind, start, i))
            kind = ""
        if prefix != "O" and not continues:
            kind, start = tag_kind, i
    if kind:
        spans.append((kind, start, len(tags)))
    return spans


def entity_types(labels: Sequence[str]) -> list[str]:
    return sorted({split_tag(label)[1] for label in labels if label != "O"})
