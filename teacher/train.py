"""Fine-tune the NER teacher: read data, train with resumable checkpoints, keep the best
epoch on valid, score it on test, publish runs/<run>/teacher.

    python -m teacher [--preset minilm|bert-base|bert-base-chinese|FILE.yaml] [--quick]
                      [--fresh] [key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
import yaml
from rich.table import Table

from edgener.artifacts import (
    MANIFEST,
    fingerprint,
    make_manifest,
    publish_dir,
    read_json,
    write_json_atomic,
)
from edgener.backbone import build_token_classifier, load_tokenizer, resolve_model_source
from edgener.config import as_dict, load_config, parse_overrides, preset_path
from edgener.data import load_dataset
from edgener.encoding import Encoder, collate, train_batches
from edgener.training import (
    Processes,
    adamw,
    close_processes,
    console,
    evaluate,
    init_processes,
    linear_warmup_decay,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    set_seed,
    training_progress,
)
from teacher.config import TeacherConfig


def choose_preset(requested: str | None) -> tuple[str, str]:
    if requested:
        return requested, "requested"
    if torch.cuda.is_available():
        return "bert-base", f"CUDA is available ({torch.cuda.get_device_name(0)})"
    return "minilm", "no CUDA device, so the offline CPU preset"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teacher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", help="preset under configs/teacher, or a YAML file")
    parser.add_argument("--quick", action="store_true", help="a slice of the data, fewer steps")
    parser.add_argument("--fresh", action="store_true", help="ignore checkpoints and outputs")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    preset, reason = choose_preset(args.preset)
    config = load_config(TeacherConfig, preset_path("teacher", preset),
                         parse_overrides(args.overrides), args.quick)
    processes = init_processes(config.threads)
    try:
        return train(config, preset, reason, processes, fresh=args.fresh)
    finally:
        close_processes(processes)


def train(config: TeacherConfig, preset: str, reason: str, processes: Processes,
          fresh: bool) -> int:
    log = console.print if processes.is_main else (lambda *a, **k: None)
    run_dir = Path(config.runs_dir) / config.run
    out_dir, work_dir = run_dir / "teacher", run_dir / ".teacher-work"
    config_id = fingerprint(as_dict(config))
    log(f"[bold]teacher[/]: preset [cyan]{preset}[/] ({reason}); model {config.model}")

    manifest_path = out_dir / MANIFEST
    if not fresh and manifest_path.is_file() and \
            read_json(manifest_path).get("config_fingerprint") == config_id:
        log(f"{out_dir} is up to date with this config; pass --fresh to retrain")
        return 0

    # Data and model
    dataset = load_dataset(config.dataset, config.data_dir, config.tag_scheme)
    train_set = dataset.split("train")[: config.train_limit]
    valid_set = dataset.split("valid")[: config.eval_limit]
    test_set = dataset.split("test")[: config.eval_limit]
    labels = dataset.labels
    log(f"data: {dataset.source}: {len(train_set)} train, {len(valid_set)} valid, "
        f"{len(test_set)} test sentences; {len(labels)} labels")
    source = resolve_model_source(config.model)
    tokenizer = load_tokenizer(source)
    set_seed(config.seed)
    model = build_token_classifier(source, labels, config.case_features, config.dropout)
    model.to(processes.device)
    encoder = Encoder(tokenizer, labels, config.max_length, config.window_overlap,
                      config.case_features)
    windows = encoder.encode_all([s.words for s in train_set], [s.tags for s in train_set])
    lengths = [len(w.input_ids) for w in windows]
    steps_per_epoch = -(-len(windows) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    trained = model
    if processes.distributed:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[processes.device.index] if processes.device.type == "cuda" else None
        )
    optimizer = adamw(model, config.lr, config.weight_decay)
    scheduler = linear_warmup_decay(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    amp_dtype = autocast_dtype(config.precision, processes.device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    # Resume from the last checkpoint when it was made with this same config.
    checkpoint_path, best_path = work_dir / "checkpoint.pt", work_dir / "best.pt"
    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "best_epoch": -1, "history": [],
             "elapsed": 0.0}
    if fresh and processes.is_main:
        checkpoint_path.unlink(missing_ok=True)
    processes.barrier()
    if checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path)
        if saved["config_fingerprint"] != config_id:
            log(f"[yellow]{checkpoint_path} was made with another config; starting over "
                f"(it is replaced at the first checkpoint)")
        else:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            restore_rng_state(saved["rng"][processes.rank])
            state = saved["state"]
            log(f"[green]resuming[/] from epoch {state['epoch'] + 1}, step {state['step']} "
                f"of {steps_per_epoch} ({checkpoint_path})")

    def checkpoint() -> None:
        rngs = [None] * processes.world_size
        if processes.distributed:
            torch.distributed.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if processes.is_main:
            save_checkpoint(checkpoint_path, {
                "config_fingerprint": config_id, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rngs,
                "state": {**state, "elapsed": state["elapsed"] + time.time() - started},
            })

    started = time.time()
    last_loss = float("nan")
    progress = training_progress() if processes.is_main else contextlib.nullcontext()
    model.train()
    try:
        with progress:
            while state["epoch"] < config.epochs:
                epoch = state["epoch"]
                batches = train_batches(lengths, config.batch_size, config.seed, epoch,
                                        config.group_by_length)
                task = progress.add_task(
                    f"epoch {epoch + 1}/{config.epochs}", total=len(batches),
                    completed=state["step"], loss=0.0, rate=0.0,
                ) if processes.is_main else None
                epoch_start, epoch_start_step = time.time(), state["step"]
                for step in range(state["step"], len(batches)):
                    shard = batches[step][processes.rank :: processes.world_size]
                    batch = collate([windows[i] for i in shard], tokenizer.pad_token_id)
                    batch = {k: v.to(processes.device) for k, v in batch.items()}
                    with torch.autocast(processes.device.type, dtype=amp_dtype,
                                        enabled=amp_dtype is not None):
                        loss = trained(**batch).loss
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    state["step"] = step + 1
                    last_loss = loss.item()
                    if task is not None:
                        rate = (step + 1 - epoch_start_step) / (time.time() - epoch_start)
                        progress.update(task, advance=1, loss=last_loss, rate=rate)
                    if state["step"] % config.checkpoint_every == 0:
                        checkpoint()

                # End of epoch: score on valid, keep the best weights.
                if processes.is_main:
                    scores = evaluate(model, encoder, [s.words for s in valid_set],
                                      [s.tags for s in valid_set], labels,
                                      config.eval_batch_size, processes.device)
                    improved = scores["f1"] > state["best_f1"]
                    if improved:
                        state["best_f1"], state["best_epoch"] = scores["f1"], epoch
                        save_checkpoint(best_path, model.state_dict())
                    state["history"].append({"epoch": epoch + 1, "valid_f1": scores["f1"],
                                             "loss": last_loss})
                    log(f"epoch {epoch + 1}: valid F1 {scores['f1']:.4f}"
                        + (" [green](best so far)[/]" if improved else ""))
                processes.barrier()
                state["epoch"], state["step"] = epoch + 1, 0
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        log(f"\n[yellow]interrupted[/]: progress saved to {checkpoint_path}; "
            "run the same command again to resume")
        return 130

    if processes.is_main:
        model.load_state_dict(load_checkpoint(best_path))
        wall_time = state["elapsed"] + time.time() - started
        publish(config, config_id, preset, model, tokenizer, encoder, labels, dataset,
                valid_set, test_set, state, wall_time, total_steps, processes, out_dir)
    processes.barrier()
    return 0


def publish(config, config_id, preset, model, tokenizer, encoder, labels, dataset,
            valid_set, test_set, state, wall_time, total_steps, processes, out_dir) -> None:
    """Score the best weights on valid and test, and write the teacher folder atomically."""
    metrics = {}
    for name, sentences in (("valid", valid_set), ("test", test_set)):
        metrics[name] = evaluate(model, encoder, [s.words for s in sentences],
                                 [s.tags for s in sentences], labels,
                                 config.eval_batch_size, processes.device)
    metrics.update(
        wall_time_s=round(wall_time, 1), steps=total_steps, epochs=config.epochs,
        best_epoch=state["best_epoch"] + 1, seed=config.seed, history=state["history"],
        params=sum(p.numel() for p in model.parameters()),
        processes=processes.world_size,
    )
    with publish_dir(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json_atomic(staging / "labels.json", labels)
        (staging / "config.yaml").write_text(yaml.safe_dump(as_dict(config), sort_keys=False))
        write_json_atomic(staging / "metrics.json", metrics)
        write_json_atomic(staging / MANIFEST, make_manifest(
            "teacher",
            preset=preset,
            config_fingerprint=config_id,
            model_source=config.model,
            architecture=model.config.architectures[0] if model.config.architectures else None,
            layers=model.config.num_hidden_layers,
            hidden_size=model.config.hidden_size,
            params=metrics["params"],
            labels=labels,
            encoding={"max_length": config.max_length, "window_overlap": config.window_overlap,
                      "case_features": config.case_features},
            dataset={"name": dataset.name, "source": dataset.source, "files": dataset.files,
                     "train_sentences": config.train_limit, "eval_sentences": config.eval_limit},
            valid_f1=metrics["valid"]["f1"],
            test_f1=metrics["test"]["f1"],
        ))
    print_summary(metrics, out_dir)


def print_summary(metrics: dict, out_dir: Path) -> None:
    table = Table(title="Teacher: entity-level scores (best epoch on valid)")
    table.add_column("type")
    for split in ("valid", "test"):
        for column in ("P", "R", "F1"):
            table.add_column(f"{split} {column}", justify="right")
    table.add_column("test support", justify="right")
    types = sorted(set(metrics["valid"]["per_type"]) | set(metrics["test"]["per_type"]))
    empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    for name in [*types, "overall"]:
        cells = []
        for split in ("valid", "test"):
            scores = metrics[split]
            row = scores if name == "overall" else scores["per_type"].get(name, empty)
            cells += [f"{100 * row[k]:.2f}" for k in ("precision", "recall", "f1")]
        support = (metrics["test"] if name == "overall"
                   else metrics["test"]["per_type"].get(name, empty))["support"]
        table.add_row(f"[bold]{name}[/]" if name == "overall" else name, *cells, str(support))
    console.print(table)
    minutes = metrics["wall_time_s"] / 60
    console.print(f"trained {metrics['steps']} steps in {minutes:.1f} min "
                  f"(best epoch {metrics['best_epoch']}); model in [bold]{out_dir}[/]")


if __name__ == "__main__":
    sys.exit(main())
