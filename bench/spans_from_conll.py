"""A CoNLL dataset folder as an annotation tool would export it: each sentence's tokens joined
by spaces, its entities as character spans, in doccano's, Label Studio's or CLUENER's shape.
Used to check that training on the JSON equals training on the CoNLL files.

    python -m bench.spans_from_conll ../shared/data/conll2003 /tmp/conll-doccano --shape doccano
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgener.runtime.conll import SPLIT_FILES, Sentence, find_split_file, read_conll
from edgener.runtime.spans import LABEL_STUDIO_FROM, LABEL_STUDIO_TO, SHAPES
from edgener.runtime.tags import detect_scheme, entity_spans, to_iob2


def text_and_spans(sentence: Sentence) -> tuple[str, list[tuple[int, int, str]]]:
    """The tokens joined by single spaces; each entity's (start, end exclusive, type)."""
    starts, position = [], 0
    for word in sentence.words:
        starts.append(position)
        position += len(word) + 1
    spans = [(starts[first], starts[end - 1] + len(sentence.words[end - 1]), kind)
             for kind, first, end in entity_spans(sentence.tags)]
    return " ".join(sentence.words), spans


def record(text: str, spans: list[tuple[int, int, str]], shape: str) -> dict:
    if shape == "doccano":
        return {"text": text, "label": [[s, e, k] for s, e, k in spans]}
    if shape == "cluener":  # end inclusive, mentions grouped by type and text
        label: dict = {}
        for start, end, kind in spans:
            label.setdefault(kind, {}).setdefault(text[start:end], []).append([start, end - 1])
        return {"text": text, "label": label}
    return {"data": {"text": text}, "annotations": [{"result": [
        {"from_name": LABEL_STUDIO_FROM, "to_name": LABEL_STUDIO_TO, "type": "labels",
         "value": {"start": s, "end": e, "text": text[s:e], "labels": [k]}}
        for s, e, k in spans]}]}


def convert(source: Path, target: Path, shape: str) -> dict[str, int]:
    """Each split of `source` written to `target` (train/valid/test; .json for Label
    Studio's list, .jsonl for the others); the number of sentences of each."""
    target.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLIT_FILES:
        sentences = read_conll(find_split_file(source, split))
        scheme = detect_scheme([s.tags for s in sentences])
        records = []
        for sentence in sentences:
            sentence.tags = to_iob2(sentence.tags, scheme)
            records.append(record(*text_and_spans(sentence), shape))
        if shape == "label-studio":
            (target / f"{split}.json").write_text(json.dumps(records, ensure_ascii=False),
                                                   encoding="utf-8")
        else:
            (target / f"{split}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                encoding="utf-8")
        counts[split] = len(records)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spans_from_conll",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--shape", choices=SHAPES, required=True)
    args = parser.parse_args(argv)
    print(convert(args.source, args.target, args.shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
