"""Does the lean runtime answer as the full install's path does? For each artifact, every
test sentence is tagged twice through the same model: by the runtime as an edge box runs
it (the encoder built from tokenizer.json with `tokenizers` alone), and with the encoder
built from the transformers tokenizer, as the training stack loads it. Then both are
timed at batch 1, round-robin in one process, so drift falls on both alike.

    python -m bench.parity runs/conll2003/quantized/L3-ort-int8-dynamic [ARTIFACT ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from bench.compare import artifact_dataset
from bench.measure import evenly_spaced, rotating_p50s, sentence_texts
from edgener.predictor import Predictor, open_predictor
from edgener.runtime.console import print_wide
from edgener.runtime.encoding import Encoder
from edgener.training.datasets import DATA_DIR_ENV, load_dataset
from edgener.training.stage import run_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parity",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", help="artifact folders")
    parser.add_argument("--dataset", help="default: the one the artifact's model was trained on")
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV))
    parser.add_argument("--split", default="test")
    parser.add_argument("--sentences", type=int, default=200, help="timed at batch 1")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    rows = []
    for folder in map(Path, args.artifacts):
        lean = open_predictor(folder, args.threads)
        full = Predictor(lean.backend, transformers_encoder(folder, lean), lean.labels,
                         lean.manifest)
        dataset = args.dataset or artifact_dataset(folder)
        sentences = load_dataset(dataset, args.data_dir).split(args.split)
        words = [s.words for s in sentences]
        rows.append({"artifact": str(folder), "sentences": len(words),
                     **compare_tags(lean, full, words),
                     **paired_p50(lean, full, words, args.sentences, args.rounds)})
    print_rows(rows)
    return 0 if all(r["differing_sentences"] == 0 for r in rows) else 1


def transformers_encoder(folder: Path, lean: Predictor) -> Encoder:
    from transformers import AutoTokenizer

    return Encoder.from_transformers(AutoTokenizer.from_pretrained(folder), lean.labels,
                                     **lean.manifest["encoding"])


def compare_tags(lean: Predictor, full: Predictor, words: list[list[str]]) -> dict:
    """Sentences whose windows, tags, or raw-text entities differ between the two paths."""
    windows = sum(lean.encoder.encode(0, w) != full.encoder.encode(0, w) for w in words)
    lean_tags = [tags for tags, _ in lean.tag(words)]
    full_tags = [tags for tags, _ in full.tag(words)]
    texts = sentence_texts(words)
    entities = sum(a != b for a, b in zip(lean.predict_batch(texts), full.predict_batch(texts),
                                          strict=True))
    differing = sum(a != b for a, b in zip(lean_tags, full_tags, strict=True))
    return {"differing_windows": windows, "differing_sentences": differing,
            "differing_entities": entities}


def paired_p50(lean: Predictor, full: Predictor, words: list[list[str]], count: int,
               rounds: int) -> dict:
    texts = sentence_texts([words[i] for i in evenly_spaced(count, len(words))])
    p50s = rotating_p50s({"lean": lean, "full": full}, texts, rounds)
    lean_p50, full_p50 = p50s["lean"], p50s["full"]
    ratios = [a / b for a, b in zip(lean_p50, full_p50, strict=True)]
    return {"lean_p50_ms": statistics.median(lean_p50), "full_p50_ms": statistics.median(full_p50),
            "lean_over_full": statistics.median(ratios), "ratio_rounds": ratios}


def print_rows(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="lean runtime against the transformers tokenizer path, same model")
    for column in ("artifact", "sentences", "windows differ", "tags differ",
                   "entities differ", "lean p50 ms", "full p50 ms", "lean / full"):
        table.add_column(column, justify="left" if column == "artifact" else "right")
    for row in rows:
        table.add_row(Path(row["artifact"]).name, str(row["sentences"]),
                      str(row["differing_windows"]), str(row["differing_sentences"]),
                      str(row["differing_entities"]), f"{row['lean_p50_ms']:.3f}",
                      f"{row['full_p50_ms']:.3f}", f"{row['lean_over_full']:.3f}")
    print_wide(table, 140)


if __name__ == "__main__":
    sys.exit(run_stage(main))
