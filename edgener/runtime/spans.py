"""Raw text with character spans, as annotation tools export it, read as IOB2 sentences.

Three shapes, told apart by their records (or named):
- doccano: `{"text": ..., "label": [[start, end, "TYPE"], ...]}`, end exclusive;
- Label Studio's JSON export: a list of tasks, `{"data": {"text": ...}, "annotations":
  [{"result": [{"value": {"start", "end", "labels": ["TYPE"]}}]}]}`, end exclusive (a task
  without annotations gives its `predictions`: pre-annotations read back);
- CLUENER: `{"text": ..., "label": {"TYPE": {"mention": [[start, end], ...]}}}`, end
  inclusive.

Text becomes words as the runtime splits raw text (`split_words`), so a model trained on it
sees the words it will serve. A span must start and end on word boundaries; with `snap`,
one that does not is widened to the words it touches, and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgener.runtime.conll import DataError, Sentence, read_conll
from edgener.runtime.text import Word, split_words

SHAPES = ("doccano", "label-studio", "cluener")
SUFFIXES = (".jsonl", ".json")
# Label Studio's named-entity template: <Labels name="label" toName="text"> over
# <Text name="text" value="$text"/>.
LABEL_STUDIO_FROM, LABEL_STUDIO_TO = "label", "text"


@dataclass
class SpanCounts:
    """What reading span files changed, for the stage's summary."""

    texts: int = 0
    entities: int = 0
    snapped: int = 0  # widened to word boundaries (with snap)
    nested: int = 0  # inside another span: the outer one is kept
    examples: list[str] = field(default_factory=list)  # the first 3 snapped spans, as evidence

    def summary(self) -> str:
        line = f"{self.texts:,} texts, {self.entities:,} entities"
        if self.snapped:
            line += (f"; {self.snapped:,} spans widened to word boundaries (e.g. "
                     f"{', '.join(self.examples)})")
        if self.nested:
            line += f"; {self.nested:,} nested spans dropped (the outer ones kept)"
        return line


def records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, record) of a JSON Lines file, or of a file holding one JSON list (Label
    Studio's export; the line is then the record's number in the list)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
        yield from enumerate(items, start=1)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not JSON ({error.msg} at column "
                            f"{error.colno})") from None


def shape_of(record: dict) -> str | None:
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("data"), dict):
        return "label-studio"
    if isinstance(record.get("label"), dict):
        return "cluener"
    if isinstance(record.get("label"), list) or "text" in record:
        return "doccano"
    return None


def spans_of(record: dict, shape: str, where: str) -> tuple[str, list[tuple[int, int, str]]]:
    """The text and its (start, end exclusive, type) spans, in the shape's own fields."""
    try:
        if shape == "label-studio":
            text = record["data"]["text"]
            done = [a for a in record.get("annotations") or [] if not a.get("was_cancelled")]
            results = (done or record.get("predictions") or [{"result": []}])[0]["result"]
            spans = [(r["value"]["start"], r["value"]["end"], label)
                     for r in results if r.get("type", "labels") == "labels"
                     for label in r["value"]["labels"][:1]]
        elif shape == "cluener":
            text = record["text"]
            spans = [(start, end + 1, kind)
                     for kind, mentions in (record.get("label") or {}).items()
                     for positions in mentions.values() for start, end in positions]
        else:
            text = record["text"]
            labels = record.get("label") or []
            if not isinstance(labels, list):
                raise TypeError(f'"label" is {type(labels).__name__}, not a list of spans')
            spans = [(start, end, kind) for start, end, kind in labels]
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise DataError(f"{where}: not a {shape} record ({type(error).__name__}: "
                        f"{error})") from None
    if not isinstance(text, str):
        raise DataError(f"{where}: the text is {type(text).__name__}, not a string")
    for start, end, kind in spans:
        if not (isinstance(start, int) and isinstance(end, int) and isinstance(kind, str)):
            raise DataError(f"{where}: span {[start, end, kind]} is not [start, end, type]")
    return text, spans


def read_span_file(path: str | Path, shape: str = "auto", snap: bool = False
                   ) -> tuple[list[Sentence], SpanCounts]:
    """A text a sentence, its words tagged IOB2 from its spans; DataError naming the file,
    line and span for a span it cannot place."""
    path = Path(path)
    sentences, counts = [], SpanCounts()
    for number, record in records(path):
        where = f"{path}:{number}"
        if shape == "auto":
            shape = shape_of(record) or ""
            if not shape:
                raise DataError(f"{where}: not a record of {', '.join(SHAPES)} (a text with "
                                "character spans)")
        text, spans = spans_of(record, shape, where)
        words = split_words(text)
        tags = tag_words(text, words, spans, where, snap, counts)
        if words:
            sentences.append(Sentence([w.text for w in words], tags, [number] * len(words),
                                      len(sentences)))
    if not sentences:
        raise DataError(f"{path}: no texts found")
    return sentences, counts


def tag_words(text: str, words: list[Word], spans: list[tuple[int, int, str]], where: str,
              snap: bool, counts: SpanCounts) -> list[str]:
    """The words' IOB2 tags from the text's spans; what was widened or dropped is added to
    `counts`."""
    counts.texts += 1
    starts = {w.start: i for i, w in enumerate(words)}
    ends = {w.end: i for i, w in enumerate(words)}
    placed = []  # (first word, last word, type, span as given)
    for start, end, kind in spans:
        shown = f"[{start}, {end}) {text[start:end]!r} {kind}"
        if not 0 <= start < end <= len(text):
            raise DataError(f"{where}: span [{start}, {end}) {kind} lies outside its text "
                            f"of {len(text)} characters")
        first, last = starts.get(start), ends.get(end)
        if first is None or last is None:
            touched = [i for i, w in enumerate(words) if w.start < end and w.end > start]
            if not snap or not touched:
                near = " | ".join(w.text for w in words_near(words, start, end))
                raise DataError(f"{where}: span {shown} does not fall on word boundaries "
                                f"(words: {near}); snap_spans=true widens it to whole words")
            first, last = touched[0], touched[-1]
            counts.snapped += 1
            if len(counts.examples) < 3:
                counts.examples.append(f"{text[start:end]!r} -> "
                                       f"{text[words[first].start:words[last].end]!r}")
        placed.append((first, last, kind, shown))
    tags = ["O"] * len(words)
    # Outer spans first: a span inside one already placed is nested, and dropped.
    kept: list[tuple[int, int, str, str]] = []
    for first, last, kind, shown in sorted(placed, key=lambda p: (p[0], -p[1])):
        outer = next((k for k in kept if k[0] <= first and last <= k[1]), None)
        if outer is not None:
            counts.nested += 1
            continue
        crossing = next((k for k in kept if k[0] <= last and first <= k[1]), None)
        if crossing is not None:
            raise DataError(f"{where}: span {shown} overlaps span {crossing[3]}")
        kept.append((first, last, kind, shown))
        tags[first:last + 1] = [f"B-{kind}"] + [f"I-{kind}"] * (last - first)
    counts.entities += len(kept)
    return tags


def words_near(words: list[Word], start: int, end: int) -> list[Word]:
    inside = [i for i, w in enumerate(words) if w.start < end + 1 and w.end > start - 1]
    if not inside:
        return []
    return words[max(inside[0] - 1, 0):inside[-1] + 2]


def as_record(text: str, entities: list[dict], shape: str, model: str) -> dict:
    """A text and its predicted entities as the tool imports pre-annotations: doccano's
    JSON line (it has no place for a score), or a Label Studio task with `predictions`
    (each span's score, and the text's mean as the prediction's)."""
    if shape == "doccano":
        return {"text": text, "label": [[e["start"], e["end"], e["type"]] for e in entities]}
    result = [{"id": f"e{i}", "from_name": LABEL_STUDIO_FROM, "to_name": LABEL_STUDIO_TO,
               "type": "labels", "score": e["score"],
               "value": {"start": e["start"], "end": e["end"], "text": e["text"],
                         "labels": [e["type"]]}}
              for i, e in enumerate(entities)]
    score = sum(e["score"] for e in entities) / len(entities) if entities else 1.0
    return {"data": {"text": text},
            "predictions": [{"model_version": model, "score": round(score, 4),
                             "result": result}]}


def read_labelled(path: str | Path, snap: bool = False, shape: str = "auto"
                  ) -> tuple[list[Sentence], SpanCounts | None]:
    """A labelled file of either kind: a CoNLL file, or an annotation tool's spans (by its
    suffix, .jsonl or .json; `shape` names the tool's, else it is told from the records);
    the span counts for the latter."""
    if shape not in ("auto", *SHAPES):
        raise DataError(f"unknown span format {shape!r}; choose auto or one of "
                        f"{', '.join(SHAPES)}")
    if Path(path).suffix in SUFFIXES:
        return read_span_file(path, shape, snap)
    return read_conll(path), None
