"""Raw text to entities through a backend: the runtime users ship and the benchmark
measures (`edgener.predictor.load_predictor` opens one from an artifact folder).

Text is split into words as the training data was (edgener.runtime.text), words into
overlapping subword windows (so a text of any length has every word tagged), and the tags
decoded under the IOB2 transition constraints. An entity's score is the mean probability
of the tags that make it up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edgener.runtime.artifacts import ArtifactError, read_json, read_manifest
from edgener.runtime.backend import Backend
from edgener.runtime.decoding import decode_all
from edgener.runtime.encoding import Encoder, TokenizerError
from edgener.runtime.inference import BATCH_TOKENS, word_logits
from edgener.runtime.tags import entity_spans
from edgener.runtime.text import Word, sentence_spans, split_words

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

    @property
    def batch_invariant(self) -> bool:
        """Whether a text's entities were measured not to depend on what it is batched
        with (the manifest's record; unknown counts as no)."""
        return bool(self.manifest.get("batch_invariance", {}).get("invariant"))

    def tag(self, sentences: Sequence[Sequence[str]], documents: Sequence[int] | None = None
            ) -> list[tuple[list[str], list[float]]]:
        """(IOB2 tags, probability of each tag) for each sentence of words; with
        `documents` (a document id a sentence, in reading order), each sentence is read
        with the sentences around it in its document, where the artifact takes context."""
        logits = word_logits(self.backend, self.encoder, sentences, self.max_batch_tokens,
                             documents)
        return [([self.labels[i] for i in path], probabilities)
                for path, probabilities in decode_all(logits, self.labels)]

    def predict_batch(self, texts: Sequence[str], documents: Sequence[int] | None = None
                      ) -> list[list[Entity]]:
        """The entities of each text. An artifact trained with context reads each sentence
        of a text with the sentences around it: in its own text, or across the texts with
        the same id in `documents` (consecutive parts of one document; None: each text is
        a document of its own)."""
        words = [split_words(text) for text in texts]
        if self.encoder.reads_context:
            tagged = self.tag_in_context(words, documents or range(len(texts)))
        else:  # each text one run of words, in overlapping windows where it is long
            tagged = self.tag([[w.text for w in ws] for ws in words])
        return [entities(text, ws, tags, probs)
                for text, ws, (tags, probs) in zip(texts, words, tagged, strict=True)]

    def tag_in_context(self, texts: Sequence[list[Word]], text_documents: Sequence[int]
                       ) -> list[tuple[list[str], list[float]]]:
        spans = [sentence_spans(words) for words in texts]
        sentences, documents = [], []
        for words, text_spans, document in zip(texts, spans, text_documents, strict=True):
            for start, end in text_spans:
                sentences.append([w.text for w in words[start:end]])
                documents.append(document)
        tagged = iter(self.tag(sentences, documents))
        out = []
        for text_spans in spans:
            tags: list[str] = []
            probabilities: list[float] = []
            for _ in text_spans:
                sentence_tags, sentence_probabilities = next(tagged)
                tags += sentence_tags
                probabilities += sentence_probabilities
            out.append((tags, probabilities))
        return out

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
