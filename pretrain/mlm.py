"""BERT's masked-language-model objective: the model, the masking, the loss, the score.

Of the tokens of a block, `mlm_probability` (15%) are chosen, never a special token or
padding; 80% of those become [MASK], 10% a random token, 10% stay as they are, and the
model predicts the original at each chosen position. The vocabulary projection runs at
the chosen positions only: over every position of a block it would cost about as much as
the whole MiniLM encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import BertConfig, BertForMaskedLM

from edgener.runtime.encoding import IGNORE_INDEX

MASKED, RANDOM = 0.8, 0.1  # of the chosen tokens; the rest are kept as they are


def pretrained_mlm(source: str) -> BertForMaskedLM:
    """A BERT with its MLM head; a backbone saved without one (a sentence-embedding model
    such as all-MiniLM-L6-v2) gets a fresh head, its output layer tied to the embeddings."""
    model = BertForMaskedLM.from_pretrained(source, dtype=torch.float32)
    model.tie_weights()
    return model


def fresh_mlm(vocab_size: int, layers: int, hidden_size: int, heads: int,
              intermediate_size: int, max_positions: int, pad_id: int) -> BertForMaskedLM:
    """A BERT of this shape from random weights (BERT from zero)."""
    return BertForMaskedLM(BertConfig(
        vocab_size=vocab_size, num_hidden_layers=layers, hidden_size=hidden_size,
        num_attention_heads=heads, intermediate_size=intermediate_size,
        max_position_embeddings=max(512, max_positions), pad_token_id=pad_id))


def pack(token_lists: Sequence[list[int]], block_size: int, cls: int, sep: int,
         line_by_line: bool) -> list[list[int]]:
    """Blocks of at most `block_size` tokens, [CLS] first and [SEP] last. Packed (the
    default): the lines' tokens one stream, a [SEP] after each line, cut into full blocks
    (the last one shorter). Line by line: a line a block, cut to fit.

    Any per-token values pack the same way with their own `cls` and `sep` stand-ins (the
    word starts of whole-word masking, say)."""
    body = block_size - 2
    if line_by_line:
        return [[cls, *ids[:body], sep] for ids in token_lists if ids]
    stream = [token for ids in token_lists if ids for token in (*ids, sep)]
    return [[cls, *stream[start:start + body], sep] for start in range(0, len(stream), body)]


def whole_words(word_starts: torch.Tensor) -> torch.Tensor:
    """For each position, the position of the first token of its word (word_starts: True
    where a word begins), so a draw made at a word's start can be read at every token."""
    positions = torch.arange(word_starts.shape[1]).expand_as(word_starts)
    return torch.where(word_starts, positions, torch.zeros_like(positions)).cummax(dim=1).values


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, probability: float,
                mask_id: int, random_ids: torch.Tensor,
                generator: torch.Generator | None = None,
                word_starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels): `probability` of the maskable positions chosen, 80% of them
    [MASK], 10% a token drawn from `random_ids`, 10% unchanged; labels hold the original
    token at chosen positions and IGNORE_INDEX elsewhere. With `word_starts`, whole words
    are chosen: every token of a word, or none."""
    draws = torch.rand(input_ids.shape, generator=generator)
    if word_starts is not None:
        draws = draws.gather(1, whole_words(word_starts))
    chosen = (draws < probability) & maskable
    roll = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (roll < MASKED)] = mask_id
    swapped = chosen & (roll >= MASKED) & (roll < MASKED + RANDOM)
    draws = torch.randint(len(random_ids), (int(swapped.sum()),), generator=generator)
    inputs[swapped] = random_ids[draws]
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return inputs, labels


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    maskable: torch.Tensor  # real tokens other than [CLS] and [SEP]
    word_starts: torch.Tensor | None  # whole-word masking: True where a word begins


def collate(blocks: Sequence[list[int]], pad_id: int, special: set[int],
            starts: Sequence[list[int]] | None = None) -> Batch:
    width = max(len(block) for block in blocks)
    ids = torch.full((len(blocks), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    word_starts = None if starts is None else torch.ones_like(ids, dtype=torch.bool)
    for row, block in enumerate(blocks):
        ids[row, :len(block)] = torch.tensor(block)
        attention[row, :len(block)] = 1
        if word_starts is not None:
            word_starts[row, :len(block)] = torch.tensor(starts[row], dtype=torch.bool)
    maskable = attention.bool() & ~torch.isin(ids, torch.tensor(sorted(special)))
    return Batch(ids, attention, maskable, word_starts)


def masked_loss(model: BertForMaskedLM, inputs: torch.Tensor, attention: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy over the chosen positions, their logits): the encoder over
    every position, the MLM head over the chosen ones only."""
    hidden = model.base_model(input_ids=inputs, attention_mask=attention).last_hidden_state
    chosen = labels != IGNORE_INDEX
    logits = model.cls(hidden[chosen])
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen]), logits


class MlmStep(torch.nn.Module):
    """One training step's loss over some blocks, masked afresh at every step (the global
    RNG, which checkpoints save and restore)."""

    def __init__(self, model: BertForMaskedLM, blocks: list[list[int]], pad_id: int,
                 mask_id: int, special: set[int], probability: float, device: torch.device,
                 starts: list[list[int]] | None = None):
        super().__init__()
        self.model, self.blocks, self.device = model, blocks, device
        self.starts = starts  # whole-word masking: 1 where a word begins, per block
        self.pad_id, self.mask_id, self.special = pad_id, mask_id, special
        self.probability = probability
        vocab_size = model.get_input_embeddings().num_embeddings
        self.random_ids = torch.tensor([i for i in range(vocab_size) if i not in special])

    def forward(self, indices: list[int]) -> torch.Tensor:
        batch = self.collate(indices, self.blocks, self.starts)
        inputs, labels = mask_tokens(batch.input_ids, batch.maskable, self.probability,
                                     self.mask_id, self.random_ids,
                                     word_starts=batch.word_starts)
        return masked_loss(self.model, inputs.to(self.device),
                           batch.attention_mask.to(self.device), labels.to(self.device))[0]

    def collate(self, indices: Sequence[int], blocks: list[list[int]],
                starts: list[list[int]] | None) -> Batch:
        return collate([blocks[i] for i in indices], self.pad_id, self.special,
                       None if starts is None else [starts[i] for i in indices])


@torch.no_grad()
def heldout_scores(step: MlmStep, blocks: list[list[int]], starts: list[list[int]] | None,
                   batch_size: int, seed: int) -> dict[str, float]:
    """Masked-token loss and accuracy on held-out blocks, masked the same way at every
    call (a seeded generator), so epochs compare like for like."""
    was_training = step.model.training
    step.model.eval()
    generator = torch.Generator().manual_seed(seed)
    total_loss, correct, count = 0.0, 0, 0
    try:
        for start in range(0, len(blocks), batch_size):
            batch = step.collate(range(start, min(start + batch_size, len(blocks))), blocks,
                                 starts)
            inputs, labels = mask_tokens(batch.input_ids, batch.maskable, step.probability,
                                         step.mask_id, step.random_ids, generator,
                                         batch.word_starts)
            if not (labels != IGNORE_INDEX).any():
                continue
            loss, logits = masked_loss(step.model, inputs.to(step.device),
                                       batch.attention_mask.to(step.device),
                                       labels.to(step.device))
            targets = labels[labels != IGNORE_INDEX].to(step.device)
            total_loss += loss.item() * len(targets)
            correct += int((logits.argmax(-1) == targets).sum())
            count += len(targets)
    finally:
        step.model.train(was_training)
    return {"loss": total_loss / count if count else float("nan"),
            "accuracy": correct / count if count else 0.0, "masked_tokens": count}
