"""Entities from raw text with any artifact, one JSON object a line.

    python -m bench.predict runs/conll2003/quantized/L3-ort-int8-static "Text to tag."
    cat texts.txt | python -m bench.predict runs/conll2003/students/L3

Each output line is {"text": ..., "entities": [{"type", "text", "start", "end", "score"}]},
offsets in characters of the input line; an empty line gives an empty entity list.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable, Iterator

from edgener.cli import run_cli
from edgener.predictor import Predictor, load_predictor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.predict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="an artifact folder: runs/<run>/teacher, "
                        "runs/<run>/students/<name> or runs/<run>/quantized/<name>")
    parser.add_argument("text", nargs="*", help="texts to tag; none: read lines from stdin")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    predictor = load_predictor(args.artifact, args.threads, args.batch_size)
    texts = args.text or (line.rstrip("\r\n") for line in sys.stdin)
    for line in predict_lines(predictor, texts, args.batch_size):
        print(line, flush=True)
    return 0


def predict_lines(predictor: Predictor, texts: Iterable[str], batch_size: int) -> Iterator[str]:
    """JSON lines for texts, batch by batch: a long input is never held whole in memory."""
    texts = iter(texts)
    while batch := list(itertools.islice(texts, batch_size)):
        for text, found in zip(batch, predictor.predict_batch(batch), strict=True):
            yield json.dumps({"text": text, "entities": [e.as_dict() for e in found]},
                             ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(run_cli(main))
