"""Pieces every training recipe shares: processes, seeds, optimiser, checkpoints, evaluation."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from edgener.decoding import constrained_decode
from edgener.encoding import Encoder, collate, eval_batches, gather_word_logits
from edgener.metrics import entity_scores

console = Console()


@dataclass
class Processes:
    """Where this process stands among torchrun's processes (one process without torchrun)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def init_processes(threads: int | None = None) -> Processes:
    """Join torchrun's process group if launched by it: nccl on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // local_world))
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return Processes(rank, world_size, device)


def close_processes(processes: Processes) -> None:
    if processes.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        skip = parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        (no_decay if skip else decay).append(parameter)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
    )


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save into a temporary file, then rename: a kill mid-write keeps the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def training_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.2f} steps/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


@torch.no_grad()
def predict_word_logits(
    model: torch.nn.Module,
    encoder: Encoder,
    sentences: Sequence[Sequence[str]],
    batch_size: int,
    device: torch.device,
) -> list[np.ndarray]:
    """Word-level logits for each sentence, every word predicted by the window owning it."""
    windows = encoder.encode_all(sentences)
    pad_id = encoder.tokenizer.pad_token_id
    was_training = model.training
    model.eval()

    def window_logits():
        for batch_indices in eval_batches([len(w.input_ids) for w in windows], batch_size):
            batch = collate([windows[i] for i in batch_indices], pad_id)
            batch.pop("labels")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            logits = logits.float().cpu().numpy()
            for row, index in enumerate(batch_indices):
                yield index, logits[row, : len(windows[index].input_ids)]

    try:
        return gather_word_logits(windows, window_logits(), [len(s) for s in sentences])
    finally:
        model.train(was_training)


def evaluate(
    model: torch.nn.Module,
    encoder: Encoder,
    words: Sequence[Sequence[str]],
    gold_tags: Sequence[Sequence[str]],
    labels: Sequence[str],
    batch_size: int,
    device: torch.device,
) -> dict:
    """Entity-level scores of a PyTorch model with constrained decoding."""
    word_logits = predict_word_logits(model, encoder, words, batch_size, device)
    predicted = [constrained_decode(logits, labels) for logits in word_logits]
    return entity_scores(gold_tags, predicted)
