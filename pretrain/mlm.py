"""BERT's pretraining objectives: the model, the masking, the loss, the score.

Masked-language modelling: of the tokens of an example, `mlm_probability` (15%) are
chosen, never a special token or padding; 80% of those become [MASK], 10% a random token,
10% stay as they are, and the model predicts the original at each chosen position. The
vocabulary projection runs at the chosen positions only: over every position it would
cost about as much as the whole MiniLM encoder. Next-sentence prediction (optional): an
example is two segments, and the model tells from [CLS] whether the second follows the
first in the text or was drawn from elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertPreTrainedModel

from edgener.runtime.encoding import IGNORE_INDEX

MASKED, RANDOM = 0.8, 0.1  # of the chosen tokens; the rest are kept as they are


def pretrained_mlm(source: str, nsp: bool = False) -> BertPreTrainedModel:
    """A BERT with its MLM head (and, with `nsp`, its next-sentence head); a backbone saved
    without them (a sentence-embedding model such as all-MiniLM-L6-v2) gets fresh ones,
    the MLM output layer tied to the embeddings."""
    kind = BertForPreTraining if nsp else BertForMaskedLM
    model = kind.from_pretrained(source, dtype=torch.float32)
    model.tie_weights()
    return model


def fresh_mlm(vocab_size: int, layers: int, hidden_size: int, heads: int,
              intermediate_size: int, max_positions: int, pad_id: int,
              nsp: bool = False) -> BertPreTrainedModel:
    """A BERT of this shape from random weights (BERT from zero)."""
    kind = BertForPreTraining if nsp else BertForMaskedLM
    return kind(BertConfig(
        vocab_size=vocab_size, num_hidden_layers=layers, hidden_size=hidden_size,
        num_attention_heads=heads, intermediate_size=intermediate_size,
        max_position_embeddings=max(512, max_positions), pad_token_id=pad_id))




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
class Example:
    """One input, [CLS] first, and what the objectives need of it besides its tokens."""

    ids: list[int]
    starts: list[int] | None = None  # whole-word masking: 1 where a word begins
    types: list[int] | None = None  # next-sentence prediction: 0 first segment, 1 second
    is_next: int | None = None  # next-sentence prediction: 1 where the second follows


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    maskable: torch.Tensor  # real tokens other than [CLS] and [SEP]
    word_starts: torch.Tensor | None
    is_next: torch.Tensor | None


def collate(examples: Sequence[Example], pad_id: int, special: set[int]) -> Batch:
    shape = (len(examples), max(len(e.ids) for e in examples))
    ids = torch.full(shape, pad_id, dtype=torch.long)
    attention = torch.zeros(shape, dtype=torch.long)
    types = torch.zeros(shape, dtype=torch.long)
    whole_words = examples[0].starts is not None
    word_starts = torch.ones(shape, dtype=torch.bool) if whole_words else None
    for row, example in enumerate(examples):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids)
        attention[row, :n] = 1
        if example.types is not None:
            types[row, :n] = torch.tensor(example.types)
        if word_starts is not None:
            word_starts[row, :n] = torch.tensor(example.starts, dtype=torch.bool)
    maskable = attention.bool() & ~torch.isin(ids, torch.tensor(sorted(special)))
    is_next = (torch.tensor([e.is_next for e in examples])
               if examples[0].is_next is not None else None)
    return Batch(ids, attention, types, maskable, word_starts, is_next)


def pretraining_loss(model: BertPreTrainedModel, batch: Batch, inputs: torch.Tensor,
                     labels: torch.Tensor, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(loss, MLM logits at the chosen positions, NSP logits or None): the encoder over
    every position, the MLM head over the chosen ones only, the next-sentence head over
    [CLS] where the batch has NSP labels (its loss added to the MLM loss, as BERT's)."""
    encoded = model.base_model(input_ids=inputs.to(device),
                               attention_mask=batch.attention_mask.to(device),
                               token_type_ids=batch.token_type_ids.to(device))
    labels = labels.to(device)
    chosen = labels != IGNORE_INDEX
    logits = model.cls.predictions(encoded.last_hidden_state[chosen])
    loss = torch.nn.functional.cross_entropy(logits.float(), labels[chosen])
    next_logits = None
    if batch.is_next is not None:
        next_logits = model.cls.seq_relationship(encoded.pooler_output)
        loss = loss + torch.nn.functional.cross_entropy(next_logits.float(),
                                                        batch.is_next.to(device))
    return loss, logits, next_logits


class PretrainStep(torch.nn.Module):
    """One training step's loss over some examples, masked afresh at every step (the
    global RNG, which checkpoints save and restore)."""

    def __init__(self, model: BertPreTrainedModel, examples: list[Example], pad_id: int,
                 mask_id: int, special: set[int], probability: float, device: torch.device):
        super().__init__()
        self.model, self.examples, self.device = model, examples, device
        self.pad_id, self.mask_id, self.special = pad_id, mask_id, special
        self.probability = probability
        vocab_size = model.get_input_embeddings().num_embeddings
        self.random_ids = torch.tensor([i for i in range(vocab_size) if i not in special])

    def masked(self, examples: Sequence[Example], generator: torch.Generator | None = None
               ) -> tuple[Batch, torch.Tensor, torch.Tensor]:
        batch = collate(examples, self.pad_id, self.special)
        inputs, labels = mask_tokens(batch.input_ids, batch.maskable, self.probability,
                                     self.mask_id, self.random_ids, generator,
                                     batch.word_starts)
        return batch, inputs, labels

    def forward(self, indices: list[int]) -> torch.Tensor:
        batch, inputs, labels = self.masked([self.examples[i] for i in indices])
        return pretraining_loss(self.model, batch, inputs, labels, self.device)[0]


@torch.no_grad()
def heldout_scores(step: PretrainStep, examples: list[Example], batch_size: int,
                   seed: int) -> dict[str, float]:
    """Masked-token loss and accuracy (and next-sentence accuracy, with NSP) on held-out
    examples, masked the same way at every call (a seeded generator), so epochs compare
    like for like."""
    was_training = step.model.training
    step.model.eval()
    generator = torch.Generator().manual_seed(seed)
    total_loss, correct, count, next_correct, pairs = 0.0, 0, 0, 0, 0
    try:
        for start in range(0, len(examples), batch_size):
            batch, inputs, labels = step.masked(examples[start:start + batch_size], generator)
            if not (labels != IGNORE_INDEX).any():
                continue
            _, logits, next_logits = pretraining_loss(step.model, batch, inputs, labels,
                                                      step.device)
            targets = labels[labels != IGNORE_INDEX].to(step.device)
            total_loss += torch.nn.functional.cross_entropy(
                logits.float(), targets, reduction="sum").item()
            correct += int((logits.argmax(-1) == targets).sum())
            count += len(targets)
            if next_logits is not None:
                next_correct += int((next_logits.argmax(-1).cpu() == batch.is_next).sum())
                pairs += len(batch.is_next)
    finally:
        step.model.train(was_training)
    scores = {"loss": total_loss / count if count else float("nan"),
              "accuracy": correct / count if count else 0.0, "masked_tokens": count}
    if pairs:
        scores["next_sentence_accuracy"] = next_correct / pairs
    return scores
