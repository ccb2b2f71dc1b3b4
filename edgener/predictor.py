"""Raw text to entities, from any artifact folder: the runtime users ship and the benchmark
measures.

    predictor = load_predictor("runs/conll2003/quantized/L3-ort-int8-static", threads=2)
    predictor.predict("Angela Merkel visited Paris.")
    # [Entity(type='PER', text='Angela Merkel', start=0, end=13, score=0.99), ...]

Text is split into words as the training data was (edgener.text), words into overlapping
subword windows (so a text of any length has every word tagged), and the tags decoded
under the IOB2 transition constraints. An entity's score is the mean probability of the
tags that make it up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgener.artifacts import ArtifactError, read_json, read_manifest, verify_files
from edgener.backends import load_backend
from edgener.decoding import constrained_path, path_probabilities
from edgener.encoding import Encoder, TokenizerError
from edgener.runtime import Backend, word_logits
from edgener.tags import entity_spans
from edgener.text import Word, split_words

STAGES = ("teacher", "student", "quantized")
# Windows per model call. ONNX Runtime's arena keeps the largest call's activations: on
# the 2-core test machine L3's INT8 peaked at 250 MB tagging CoNLL-2003 test in calls of
# 32 windows, 144 MB in calls of 8, at the same speed within run noise (docs/results.md).
BATCH_WINDOWS = 8


@dataclass(frozen=True)
class Entity:
    type: str
    text: str
    start: int  # character offsets in the input string, end exclusive
    end: int
    score: float

    def as_dict(self) -> dict:
        return asdict(self)


class Predictor:
    """A backend with the encoder and labels of the artifact it serves."""

    def __init__(self, backend: Backend, encoder: Encoder, labels: Sequence[str],
                 manifest: dict | None = None, batch_size: int = BATCH_WINDOWS):
        self.backend = backend
        self.encoder = encoder
        self.labels = list(labels)
        self.manifest = manifest or {}
        self.batch_size = batch_size

    @classmethod
    def from_folder(cls, folder: str | Path, threads: int | None = None,
                    backend: Backend | None = None, batch_size: int = BATCH_WINDOWS) -> Predictor:
        """Load the artifact in `folder` (a teacher, student or quantized folder); `backend`
        replaces the one its manifest names (the benchmark's peers use this)."""
        folder = Path(folder)
        manifest = read_artifact_manifest(folder)
        # Sizes only: a truncated copy is caught for the price of a stat per file; the
        # hashes (`edge-ner info --verify`) would cost a read of every byte at each start.
        verify_files(folder, manifest)
        encoder, labels = artifact_encoder(folder, manifest)
        if backend is None:
            backend = load_backend(folder, manifest, threads)
        return cls(backend, encoder, labels, manifest, batch_size)

    def tag(self, sentences: Sequence[Sequence[str]]) -> list[tuple[list[str], np.ndarray]]:
        """(IOB2 tags, probability of each tag) for each sentence of words."""
        out = []
        for logits in word_logits(self.backend, self.encoder, sentences, self.batch_size):
            if len(logits) == 0:
                out.append(([], np.zeros(0)))
                continue
            path = constrained_path(logits, self.labels)
            out.append(([self.labels[i] for i in path], path_probabilities(logits, path)))
        return out

    def predict_batch(self, texts: Sequence[str]) -> list[list[Entity]]:
        words = [split_words(text) for text in texts]
        tagged = self.tag([[w.text for w in ws] for ws in words])
        return [entities(text, ws, tags, probs)
                for text, ws, (tags, probs) in zip(texts, words, tagged, strict=True)]

    def predict(self, text: str) -> list[Entity]:
        return self.predict_batch([text])[0]


def entities(text: str, words: Sequence[Word], tags: Sequence[str],
             probs: np.ndarray) -> list[Entity]:
    found = []
    for kind, start, end in entity_spans(tags):
        first, last = words[start].start, words[end - 1].end
        found.append(Entity(kind, text[first:last], first, last,
                            round(float(probs[start:end].mean()), 4)))
    return found


def artifact_encoder(folder: Path, manifest: dict) -> tuple[Encoder, list[str]]:
    """The encoder and labels an artifact folder was built with (its manifest already read)."""
    try:
        labels = read_json(folder / "labels.json")
        return Encoder.from_folder(folder, labels, **manifest["encoding"]), labels
    except (OSError, ValueError, TokenizerError) as error:
        raise ArtifactError(f"{folder} is incomplete: {str(error).splitlines()[0]}") from error


def read_artifact_manifest(folder: Path) -> dict:
    """The manifest of any servable artifact folder, or an ArtifactError saying what is
    wrong and how to make one."""
    hint = "make teacher`, `make distill` or `make quantize"
    if not folder.is_dir():
        raise ArtifactError(f"no artifact at {folder}: not a folder (`{hint}` writes them "
                            "under runs/<run>/)")
    manifest = read_manifest(folder, STAGES, hint)
    if "encoding" not in manifest:
        raise ArtifactError(f"{folder}: its manifest lacks the encoding settings; "
                            f"rerun `{hint}`")
    return manifest


@lru_cache(maxsize=8)
def _cached(folder: Path, threads: int | None, batch_size: int) -> Predictor:
    return Predictor.from_folder(folder, threads, batch_size=batch_size)


def load_predictor(folder: str | Path, threads: int | None = None,
                   batch_size: int = BATCH_WINDOWS) -> Predictor:
    """A Predictor for `folder`, loaded once per process and reused."""
    return _cached(Path(folder).resolve(), threads, batch_size)
