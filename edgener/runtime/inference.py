"""Word logits through any backend, in token-budget batches, and scoring through them.

Every stage scores a model through the backend that will serve it, with the same windows,
word alignment and constrained decoding, so their F1 numbers compare like for like.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgener.runtime.backend import Backend
from edgener.runtime.decoding import decode_all, softmax
from edgener.runtime.encoding import (
    Encoder,
    gather_word_logits,
    joined,
    packed,
    pad_arrays,
    token_batches,
)
from edgener.runtime.metrics import entity_scores

# Padded positions per model call (rows x the longest row). Measured on the 2-core test
# machine (bench.batching, docs/results.md): tagging CoNLL-2003 test, L3's INT8 artifacts
# ran within noise of their fastest from 512 to 2,048, while ONNX Runtime's arena, which
# keeps the largest call's activations, took peak memory from 156 MB to 240 MB.
BATCH_TOKENS = 512


def word_logits(backend: Backend, encoder: Encoder, sentences: Sequence[Sequence[str]],
                max_tokens: int = BATCH_TOKENS, documents: Sequence[int] | None = None
                ) -> list[np.ndarray]:
    """Word-level logits for each sentence, every word predicted by the window owning it;
    the windows of all sentences go to the model sorted by length, `max_tokens` padded
    positions a call. With `documents` (a document id a sentence), a sentence is read with
    the sentences around it in its document, where the encoder takes context."""
    if encoder.pack_documents and documents is not None:  # each run read as one text
        runs = packed(sentences, documents)
        found = word_logits(backend, encoder, joined(sentences, runs), max_tokens)
        out = []
        for (a, b), logits in zip(runs, found, strict=True):
            offsets = np.cumsum([0] + [len(sentences[s]) for s in range(a, b)])
            out += [logits[offsets[k]:offsets[k + 1]] for k in range(b - a)]
        return out
    windows = encoder.encode_all(sentences, documents=documents)

    def window_logits():
        for indices in token_batches([len(w.input_ids) for w in windows], max_tokens):
            logits = backend(pad_arrays([windows[i] for i in indices], encoder.pad_id))
            for row, index in enumerate(indices):
                yield index, logits[row, : len(windows[index].input_ids)]

    return gather_word_logits(windows, window_logits(), [len(s) for s in sentences])


def score(backend: Backend, encoder: Encoder, words: Sequence[Sequence[str]],
          gold_tags: Sequence[Sequence[str]], labels: Sequence[str],
          max_tokens: int = BATCH_TOKENS, documents: Sequence[int] | None = None) -> dict:
    """Entity-level scores of a backend, with constrained decoding (and the sentences'
    documents as context, where given and the encoder takes it)."""
    predicted = [[labels[i] for i in path] for path, _ in
                 decode_all(word_logits(backend, encoder, words, max_tokens, documents),
                            labels)]
    return entity_scores(gold_tags, predicted)


def batch_invariance(backend: Backend, encoder: Encoder, sentences: Sequence[Sequence[str]],
                     max_tokens: int = BATCH_TOKENS, tolerance: float = 1e-3) -> dict:
    """Whether a window's tag probabilities depend on what it is batched with: each window
    alone, then again in planted batches that pad it next to windows of very different
    lengths (longest and shortest alternating, up to `max_tokens` padded positions a
    batch). Invariant: no token's most probable tag changes, and no probability moves by
    more than `tolerance`."""
    windows = encoder.encode_all(sentences)
    alone = [softmax(backend(pad_arrays([w], encoder.pad_id))[0]) for w in windows]
    by_length = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    planted = [by_length[-1 - k // 2] if k % 2 == 0 else by_length[k // 2]
               for k in range(len(windows))]
    batches: list[list[int]] = []
    for index in planted:
        rows = batches[-1] if batches else []
        longest = max([len(windows[i].input_ids) for i in rows + [index]])
        if rows and (len(rows) + 1) * longest <= max_tokens:
            rows.append(index)
        else:
            batches.append([index])
    largest_diff, changed = 0.0, 0
    for rows in batches:
        probabilities = softmax(backend(pad_arrays([windows[i] for i in rows], encoder.pad_id)))
        for row, index in enumerate(rows):
            batched = probabilities[row, : len(windows[index].input_ids)]
            largest_diff = max(largest_diff, float(np.abs(batched - alone[index]).max()))
            changed += int((batched.argmax(-1) != alone[index].argmax(-1)).sum())
    return {"windows": len(windows), "batches": len(batches),
            "largest_batch": max((len(rows) for rows in batches), default=0),
            "max_probability_diff": largest_diff, "argmax_changes": changed,
            "tolerance": tolerance,
            "invariant": changed == 0 and largest_diff <= tolerance}
