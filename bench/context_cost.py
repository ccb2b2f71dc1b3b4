"""What reading sentences in their documents would cost an artifact: its test split tagged
with each way of reading context (its manifest's encoding switched in a temporary copy)
against each sentence alone, sentences/s paired per round, and the subword tokens each
reads. The speeds hold for any weights of the same graph; the F1 only for an artifact
trained that way.

    python -m bench.context_cost runs/conll2003/quantized/L3-ort-int8-dynamic \
        --test-file ../shared/data/conll2003/test.txt
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench.measure import context_cost
from edgener.predictor import open_predictor
from edgener.runtime.conll import read_conll
from edgener.runtime.console import run_cli

WAYS = {"packed": {"pack_documents": True, "context_tokens": 0},
        "context64": {"context_tokens": 64, "pack_documents": False}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.context_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--test-file", default="../shared/data/conll2003/test.txt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    test = read_conll(args.test_file)
    words, tags = [s.words for s in test], [s.tags for s in test]
    documents = [s.document for s in test]
    with tempfile.TemporaryDirectory() as work:
        for name, setting in WAYS.items():
            folder = Path(work) / name
            shutil.copytree(args.artifact, folder)
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["encoding"] |= setting
            (folder / "manifest.json").write_text(json.dumps(manifest))
            predictor = open_predictor(folder, args.threads)
            predictor.tag(words[:200], documents[:200])  # warm-up
            cost = context_cost(predictor, words, tags, documents, args.rounds)
            print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                    for k, v in cost.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
