"""TextBrewer's GeneralDistiller applied to token classification.

The adaptors turn a token-classification model's outputs into TextBrewer's vocabulary:
token logits masked to real tokens (never padding, [CLS] or [SEP]), hidden states for the
intermediate matches, and the hard-label loss. The teacher's outputs can be computed once
and cached, since the training windows do not change between epochs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from rich.progress import Progress
from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig

from edgener.runtime.backend import MODEL_INPUTS
from edgener.runtime.console import console
from edgener.runtime.encoding import IGNORE_INDEX, Window, token_batches
from edgener.training.loop import collate


def real_token_mask(batch: dict[str, torch.Tensor], special_ids: Sequence[int]) -> torch.Tensor:
    """True at tokens that come from words: not padding, not [CLS] or [SEP]."""
    mask = batch["attention_mask"].bool().clone()
    for token_id in special_ids:
        mask &= batch["input_ids"] != token_id
    return mask


def hard_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over labelled positions; 0 for a batch with none (unlabeled text)."""
    flat = labels.view(-1)
    count = (flat != IGNORE_INDEX).sum()
    total = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), flat,
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total / count.clamp(min=1)


def student_adaptor(batch: dict, outputs) -> dict:
    return {
        "logits": [outputs.logits],
        "hidden": list(outputs.hidden_states),
        "logits_mask": [batch["logits_mask"]],
        "inputs_mask": batch["attention_mask"],
        "losses": [hard_label_loss(outputs.logits, batch["labels"])],
    }


def teacher_adaptor(batch: dict, outputs: dict) -> dict:
    """`outputs` holds the teacher's logits and hidden states, live or from the cache."""
    return {
        "logits": [outputs["logits"]],
        "hidden": outputs["hidden"],
        "logits_mask": [batch["logits_mask"]],
        "inputs_mask": batch["attention_mask"],
    }


class TeacherCache:
    """Teacher logits and selected hidden states for every training window, computed once.

    Stored per window without padding (float32, exactly what the teacher returns), and
    padded into a batch on demand.
    """

    def __init__(self, teacher: torch.nn.Module, windows: Sequence[Window], layers: Sequence[int],
                 max_tokens: int, device: torch.device, pad_id: int):
        self.layers = sorted(set(layers))
        self.num_hidden = teacher.config.num_hidden_layers + 1
        self.logits: list[torch.Tensor | None] = [None] * len(windows)
        self.hidden: dict[int, list[torch.Tensor | None]] = {
            layer: [None] * len(windows) for layer in self.layers
        }
        started = time.time()
        teacher.eval()
        batches = token_batches([len(w.input_ids) for w in windows], max_tokens)
        with torch.no_grad(), Progress(console=console, transient=True) as progress:
            task = progress.add_task("caching teacher outputs", total=len(batches))
            for indices in batches:
                outputs = teacher_outputs(teacher, collate([windows[i] for i in indices], pad_id),
                                          device)
                for row, index in enumerate(indices):
                    length = len(windows[index].input_ids)
                    self.logits[index] = outputs["logits"][row, :length].cpu().clone()
                    for layer in self.layers:
                        hidden = outputs["hidden"][layer][row, :length]
                        self.hidden[layer][index] = hidden.cpu().clone()
                progress.advance(task)
        self.seconds = time.time() - started
        tensors = [*self.logits, *(t for rows in self.hidden.values() for t in rows)]
        self.megabytes = sum(t.numel() * t.element_size() for t in tensors) / 2**20

    def batch(self, indices: Sequence[int], width: int, device: torch.device) -> dict:
        def padded(rows: list[torch.Tensor]) -> torch.Tensor:
            out = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
            for i, row in enumerate(rows):
                out[i, : len(row)] = row
            return out.to(device)

        hidden: list[torch.Tensor | None] = [None] * self.num_hidden
        for layer in self.layers:
            hidden[layer] = padded([self.hidden[layer][i] for i in indices])
        return {"logits": padded([self.logits[i] for i in indices]), "hidden": hidden}


def teacher_outputs(teacher: torch.nn.Module, batch: dict, device: torch.device) -> dict:
    outputs = teacher(**{k: batch[k].to(device) for k in MODEL_INPUTS}, output_hidden_states=True)
    return {"logits": outputs.logits, "hidden": list(outputs.hidden_states)}


def make_distiller(teacher: torch.nn.Module, student: torch.nn.Module, matches: list[dict],
                   temperature: float, kd_weight: float, hard_label_weight: float,
                   work_dir: str, device: torch.device) -> GeneralDistiller:
    train_config = TrainingConfig(output_dir=work_dir, device=device, log_dir=None)
    distill_config = DistillationConfig(
        temperature=temperature,
        kd_loss_type="ce",
        kd_loss_weight=kd_weight,
        hard_label_weight=hard_label_weight,
        intermediate_matches=matches,
    )
    return GeneralDistiller(train_config, distill_config, teacher, student,
                            teacher_adaptor, student_adaptor)


class DistillStep(torch.nn.Module):
    """One distillation step's loss: TextBrewer's total of KD, hidden-state matches and
    hard labels, with the student and the match projections as the trained modules."""

    def __init__(self, distiller: GeneralDistiller, windows: Sequence[Window], pad_id: int,
                 special_ids: Sequence[int], device: torch.device,
                 cache: TeacherCache | None):
        super().__init__()
        self.student = distiller.model_S
        self.projections = torch.nn.ModuleList(p for p in distiller.projs if p is not None)
        self.distiller, self.windows, self.pad_id = distiller, windows, pad_id
        self.special_ids, self.device, self.cache = list(special_ids), device, cache

    def forward(self, indices: list[int]) -> torch.Tensor:
        batch = collate([self.windows[i] for i in indices], self.pad_id)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        batch["logits_mask"] = real_token_mask(batch, self.special_ids)
        student_out = self.student(**{k: batch[k] for k in MODEL_INPUTS},
                                   output_hidden_states=True)
        if self.cache is not None:
            teacher_out = self.cache.batch(indices, batch["input_ids"].shape[1], self.device)
        else:
            self.distiller.model_T.eval()
            with torch.no_grad():
                teacher_out = teacher_outputs(self.distiller.model_T, batch, self.device)
        loss, _ = self.distiller.compute_loss(
            self.distiller.adaptor_S(batch, student_out),
            self.distiller.adaptor_T(batch, teacher_out),
        )
        return loss
