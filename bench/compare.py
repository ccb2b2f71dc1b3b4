"""Batch-1 latency of a few artifacts, timed round-robin in one process: a check on the
report's ratios.

The report measures each row in a fresh process, minutes apart, so a ratio between two
rows also carries whatever the machine did in between (on a shared VM, the same artifact
can measure 1.5-2x apart in two runs). Here each round times every artifact once over
the same sentences, so drift falls on all of them alike, and ratios are given per round.

    python -m bench.compare runs/conll2003/teacher runs/conll2003/quantized/L3-ort-int8-dynamic

The sentences come from the test split of the dataset the first artifact's model was
trained on, as its manifest records it (--dataset picks another).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from rich.table import Table

from bench.measure import evenly_spaced, latency_round, sentence_texts, source_model_folder
from edgener.predictor import open_predictor
from edgener.runtime.artifacts import MANIFEST, ArtifactError, read_json
from edgener.runtime.console import console, print_wide
from edgener.training.datasets import DATA_DIR_ENV, load_dataset, recorded_dataset
from edgener.training.stage import run_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", help="artifact folders; ratios are against "
                        "the first")
    parser.add_argument("--dataset", help="a dataset folder or a name under the data dir "
                        "(default: the one the first artifact's model was trained on)")
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV))
    parser.add_argument("--sentences", type=int, default=200,
                        help="test sentences spread over the split, timed one at a time")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    dataset = args.dataset or artifact_dataset(Path(args.artifacts[0]))
    test = [s.words for s in load_dataset(dataset, args.data_dir).split("test")]
    texts = sentence_texts([test[i] for i in evenly_spaced(args.sentences, len(test))])
    predictors = {folder: open_predictor(folder, args.threads)
                  for folder in args.artifacts}
    p50s: dict[str, list[float]] = {folder: [] for folder in predictors}
    with console.status("timing") as status:
        for round_index in range(args.rounds):
            for folder, predictor in predictors.items():
                status.update(f"round {round_index + 1}/{args.rounds}: {folder}")
                latency_round(predictor, texts[: args.warmup])
                p50s[folder].append(float(np.median(latency_round(predictor, texts))))
    print_ratios(p50s, args.threads, len(texts))
    return 0


def artifact_dataset(folder: Path) -> str:
    """The dataset `folder`'s model was trained on, as load_dataset takes it (its folder
    while it exists, else its name under the data dir). A teacher's or student's manifest
    records it; a quantized artifact's names its source model, whose manifest does."""
    manifest = _manifest(folder)
    if "dataset" in manifest:
        return recorded_dataset(manifest)
    for source in _source_folders(folder, manifest):
        if (source / MANIFEST).is_file():
            recorded = read_json(source / MANIFEST)
            if "dataset" in recorded:
                return recorded_dataset(recorded)
    raise ArtifactError(f"{folder}: its manifest records no dataset, nor does its source "
                        "model's; pass --dataset")


def _manifest(folder: Path) -> dict:
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(f"{folder} is no artifact folder ({MANIFEST} missing)")
    return read_json(folder / MANIFEST)


def _source_folders(folder: Path, manifest: dict) -> list[Path]:
    """Where a quantized artifact's source model may be: the folder its manifest recorded
    (relative to where quantize ran, which may not be here), then the model of that name
    in the artifact's own run (runs/<run>/quantized/<name> -> runs/<run>/...)."""
    found = [Path(manifest["source"])] if manifest.get("source") else []
    if manifest.get("source_name"):
        found.append(source_model_folder(folder.resolve().parent.parent,
                                         manifest["source_name"]))
    return found


def round_ratios(p50s: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each artifact's speedup over the first one, round by round."""
    reference = next(iter(p50s.values()))
    return {name: [ref / p50 for ref, p50 in zip(reference, rounds, strict=True)]
            for name, rounds in p50s.items()}


def print_ratios(p50s: dict[str, list[float]], threads: int, sentences: int) -> None:
    table = Table(title=f"batch-1 p50 ms, {sentences} test sentences, {threads} threads, "
                  "round-robin in one process")
    table.add_column("artifact", no_wrap=True)
    rounds = len(next(iter(p50s.values())))
    for index in range(rounds):
        table.add_column(f"round {index + 1}", justify="right")
    for column in ("x first: min", "median", "max"):
        table.add_column(column, justify="right")
    for (name, values), ratios in zip(p50s.items(), round_ratios(p50s).values(), strict=True):
        table.add_row(name, *(f"{v:.2f}" for v in values),
                      *(f"{r:.2f}" for r in (min(ratios), np.median(ratios), max(ratios))))
    print_wide(table, 160)


if __name__ == "__main__":
    sys.exit(run_stage(main))
