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

from edgener.artifacts import ArtifactError, read_json, read_manifest, verify_files
from edgener.backends import load_backend
from edgener.decoding import decode_all
from edgener.encoding import Encoder, TokenizerError
from edgener.runtime import BATCH_TOKENS, Backend, word_logits
from edgener.tags import entity_spans
from edgener.text import Word, split_words

STAGES = ("teacher", "student", "quantized")


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
    """A backend with the encoder and labels of the artifact it serves.

    The texts of one call are batched together: all their windows sorted by length, then
    cut into model calls of at most `max_batch_tokens` padded positions."""

    def __init__(self, backend: Backend, encoder: Encoder, labels: Sequence[str],
                 manifest: dict | None = None, max_batch_tokens: int = BATCH_TOKENS):
        self.backend = backend
        self.encoder = encoder
        self.labels = list(labels)
        self.manifest = manifest or {}
        self.max_batch_tokens = max_batch_tokens

    @classmethod
    def from_folder(cls, folder: str | Path, threads: int | None = None,
                    backend: Backend | None = None,
                    max_batch_tokens: int = BATCH_TOKENS) -> Predictor:
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
        return cls(backend, encoder, labels, manifest, max_batch_tokens)

    @property
    def batch_invariant(self) -> bool:
        """Whether a text's entities were measured not to depend on what it is batched
        with (the manifest's record; unknown counts as no)."""
        return bool(self.manifest.get("batch_invariance", {}).get("invariant"))

    def tag(self, sentences: Sequence[Sequence[str]]) -> list[tuple[list[str], list[float]]]:
        """(IOB2 tags, probability of each tag) for each sentence of words."""
        logits = word_logits(self.backend, self.encoder, sentences, self.max_batch_tokens)
        return [([self.labels[i] for i in path], probabilities)
                for path, probabilities in decode_all(logits, self.labels)]

    def predict_batch(self, texts: Sequence[str]) -> list[list[Entity]]:
        words = [split_words(text) for text in texts]
        tagged = self.tag([[w.text for w in ws] for ws in words])
        return [entities(text, ws, tags, probs)
                for text, ws, (tags, probs) in zip(texts, words, tagged, strict=True)]

    def predict(self, text: str) -> list[Entity]:
        return self.predict_batch([text])[0]


def entities(text: str, words: Sequence[Word], tags: Sequence[str],
             probs: Sequence[float]) -> list[Entity]:
    found = []
    for kind, start, end in entity_spans(tags):
        first, last = words[start].start, words[end - 1].end
        found.append(Entity(kind, text[first:last], first, last,
                            round(sum(probs[start:end]) / (end - start), 4)))
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
def _cached(folder: Path, threads: int | None, max_batch_tokens: int) -> Predictor:
    return Predictor.from_folder(folder, threads, max_batch_tokens=max_batch_tokens)


def load_predictor(folder: str | Path, threads: int | None = None,
                   max_batch_tokens: int = BATCH_TOKENS) -> Predictor:
    """A Predictor for `folder`, loaded once per process and reused."""
    return _cached(Path(folder).resolve(), threads, max_batch_tokens)
