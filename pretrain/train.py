"""Pretrain the backbone on your own text with BERT's masked-language-model objective;
publish runs/<run>/pretrained, the backbone `make teacher ARGS=model=pretrained` starts from.

    python -m pretrain [--preset default|chinese|FILE.yaml] [--quick] [--fresh]
                       [mode=continue|extend|scratch] [corpus=PATH] [key=value ...]

continue: the backbone as it is, MLM on the text (domain-adaptive pretraining). extend:
first the corpus's frequent tokens the vocabulary lacks are added (every CJK character
above a count; for other scripts, WordPiece pieces learned on the words it cannot spell),
their rows started from what the model knows, old ids and rows unchanged; then MLM.
scratch: a WordPiece vocabulary learned from the text and a BERT trained from random
weights, as BERT itself was made.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch
import yaml
from tokenizers import Tokenizer

from edgener.runtime.artifacts import MANIFEST, publish_dir, read_json, write_json_atomic
from edgener.runtime.conll import DataError
from edgener.runtime.console import console
from edgener.runtime.text import CJK
from edgener.training.backbone import load_tokenizer, resolve_model_source
from edgener.training.config import (
    ConfigError,
    as_dict,
    dataset_run_name,
    load_config,
    parse_overrides,
    preset_path,
    run_path,
    stage_parser,
)
from edgener.training.datasets import load_dataset
from edgener.training.loop import (
    FitResult,
    Processes,
    fit,
    set_seed,
    torchrun_processes,
)
from edgener.training.publish import describe_model, fingerprint, make_manifest, seal_folder
from pretrain import vocabulary
from pretrain.config import PretrainConfig
from pretrain.corpus import (
    chinese_segmenter,
    decontaminate,
    hold_out,
    locate,
    read_corpus,
    sentence_lines,
)
from pretrain.examples import blocks, sentence_pairs, sentence_tokens, tokens_of
from pretrain.mlm import Example, PretrainStep, fresh_mlm, heldout_scores, pretrained_mlm

PROBE_STEPS = 3  # steps timed to fit the schedule to max_minutes


def main(argv: list[str] | None = None, prog: str = "python -m pretrain") -> int:
    parser = stage_parser(prog, __doc__, "pretrain", "a slice of the text, a few minutes",
                          preset="default")
    parser.add_argument("--if-the-teacher-needs-it", action="store_true",
                        help="pretrain only where the teacher preset of the same name starts "
                             "from the pretrained backbone (model: pretrained), as `make all` "
                             "does; otherwise say so and stop")
    args = parser.parse_args(argv)
    if args.if_the_teacher_needs_it and not teacher_needs_pretraining(args.preset):
        console.print("pretrain: skipped; the teacher preset starts from its backbone as it "
                      "is (a preset whose model is `pretrained` pretrains first)")
        return 0
    config = load_config(PretrainConfig, preset_path("pretrain", args.preset),
                         parse_overrides(args.overrides), args.quick)
    config.run = config.run or dataset_run_name(config.dataset)
    with torchrun_processes(config.threads) as processes:
        return pretrain(config, args.preset, processes, args.fresh)


def teacher_needs_pretraining(preset: str | None) -> bool:
    """Whether the teacher preset named `preset` trains from the run's pretrained backbone:
    presets say so where pretraining was measured to pay (configs/teacher/chinese.yaml)."""
    if preset is None:
        return False
    try:
        path = preset_path("teacher", preset)
    except ConfigError:  # no such teacher preset: the teacher stage says so itself
        return False
    return (yaml.safe_load(path.read_text()) or {}).get("model") == "pretrained"


def pretrain(config: PretrainConfig, preset: str, processes: Processes, fresh: bool) -> int:
    log = console.print if processes.is_main else (lambda *a, **k: None)
    run_dir = run_path(config.runs_dir, config.run)
    out_dir = run_dir / "pretrained"
    config_id = fingerprint(as_dict(config))
    if not fresh and (out_dir / MANIFEST).is_file() and \
            read_json(out_dir / MANIFEST).get("config_fingerprint") == config_id:
        log(f"{out_dir} is up to date with this config; pass --fresh to pretrain again")
        return 0
    log(f"[bold]pretrain[/]: preset [cyan]{preset}[/], mode [cyan]{config.mode}[/]"
        + ("" if config.mode == "scratch" else f" from {config.model}"))

    # The text
    # Only the words count here: a span off word boundaries is widened, not refused.
    dataset = load_dataset(config.dataset, config.data_dir, snap_spans=True)
    if config.corpus:
        lines = read_corpus(locate(config.corpus, config.data_dir), config.corpus_limit)
    else:
        lines = sentence_lines(dataset.split("train"))[: config.corpus_limit]
    removed = 0
    if config.decontaminate:
        lines, removed = decontaminate(lines, dataset.split("valid") + dataset.split("test"))
        if not lines:
            raise DataError("every corpus line holds a valid or test sentence: nothing left "
                            "to pretrain on")
    train_lines, heldout_lines = hold_out(lines, config.heldout_share, config.seed)
    log(f"corpus: {config.corpus or f'{dataset.source} train'}: {len(lines):,} lines "
        f"({removed:,} removed for holding a valid or test sentence), "
        f"{len(heldout_lines):,} held out")

    # The vocabulary and the model
    set_seed(config.seed)
    added: list[str] = []
    if config.mode == "scratch":
        tokenizer = vocabulary.learned(train_lines, config.vocab_size, config.lowercase)
        model = fresh_mlm(len(tokenizer), config.layers, config.hidden_size, config.heads,
                          config.intermediate_size, config.block_size, tokenizer.pad_token_id,
                          config.nsp)
    else:
        source = resolve_model_source(config.model)
        tokenizer = load_tokenizer(source)
        model = pretrained_mlm(source, config.nsp)
        if config.mode == "extend":
            tokenizer, added = vocabulary.extend(model, tokenizer, train_lines,
                                                 config.extend_min_count,
                                                 config.extend_pieces, config.seed)
            log(f"vocabulary: {len(added):,} tokens added ({' '.join(added[:12])}"
                f"{' ...' if len(added) > 12 else ''}), {len(tokenizer):,} in all")
    model.to(processes.device)

    # A copy without the padding and truncation a tokenizer.json may carry: lines are
    # tokenized whole, then packed.
    pieces = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    pieces.no_padding()
    pieces.no_truncation()

    segment = None
    if config.whole_word_mask and any(CJK.search(line) for line in train_lines[:1000]):
        segment = chinese_segmenter()
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def examples_of(text: list[str]) -> list[Example]:
        if config.nsp:
            return sentence_pairs(sentence_tokens(pieces, text, segment,
                                                  config.whole_word_mask),
                                  config.block_size, cls, sep, config.whole_word_mask,
                                  config.seed)
        return blocks(tokens_of(pieces, text, segment, config.whole_word_mask),
                      config.block_size, cls, sep, config.line_by_line, config.whole_word_mask)

    examples, heldout = examples_of(train_lines), examples_of(heldout_lines)
    tokens = sum(len(e.ids) for e in examples)
    special = set(tokenizer.all_special_ids)
    step = PretrainStep(model, examples, tokenizer.pad_token_id, tokenizer.mask_token_id,
                        special, config.mlm_probability, processes.device)
    work = run_dir / ".pretrain-work"
    chosen: list[int] | None = list(range(len(examples)))
    # The first process plans; every process trains its plan.
    if config.max_minutes and config.epochs:
        chosen = fitted_schedule(step, config, work, config_id, log) \
            if processes.is_main else None
        if processes.distributed:
            shared = [chosen]
            torch.distributed.broadcast_object_list(shared, src=0)
            chosen = shared[0]
    step.examples = [examples[i] for i in chosen]
    kind = "sentence pairs" if config.nsp else "blocks"
    log(f"{len(step.examples):,} {kind} of up to {config.block_size} tokens "
        f"({sum(len(e.ids) for e in step.examples):,} tokens) for {config.epochs} epoch(s)")

    def validate() -> float:
        return heldout_scores(step, heldout, config.batch_size, config.seed)["accuracy"]

    lengths = [len(e.ids) for e in step.examples]
    embeddings = model.get_input_embeddings().weight
    result = FitResult(best_epoch=0, best_valid_f1=float("nan"), steps=0, wall_time_s=0.0)
    if config.epochs:
        result = fit(step, model, lengths, validate, config, work, config_id, processes, fresh,
                     metric=("heldout_accuracy", "held-out accuracy"),
                     tokens_per_step=config.batch_size * sum(lengths) / len(lengths),
                     own_lrs={embeddings: config.embedding_lr} if config.embedding_lr else None)
    if processes.is_main:
        scores = heldout_scores(step, heldout, config.batch_size, config.seed)
        trained_tokens = sum(len(e.ids) for e in step.examples) * config.epochs
        manifest = make_manifest(
            "pretrained", preset=preset, config_fingerprint=config_id, mode=config.mode,
            model_source=None if config.mode == "scratch" else config.model,
            **describe_model(model),
            corpus={"source": str(config.corpus or f"{dataset.source} (train)"),
                    "lines": len(lines), "removed_as_valid_or_test": removed,
                    "heldout_lines": len(heldout_lines), "tokens": tokens,
                    "examples": len(examples), "block_size": config.block_size,
                    "line_by_line": config.line_by_line},
            vocabulary={"size": len(tokenizer), "added": len(added),
                        "added_first": added[:50]},
            objective={"mlm_probability": config.mlm_probability, "nsp": config.nsp,
                       "embedding_lr": config.embedding_lr,
                       "whole_word_mask": config.whole_word_mask,
                       "segmenter": "jieba" if segment else None},
            heldout=scores,
            training={"epochs": config.epochs, "steps": result.steps,
                      "wall_time_s": result.wall_time_s,
                      "tokens_per_s": round(trained_tokens / max(result.wall_time_s, 1e-9)),
                      "history": result.history},
            dataset={"name": dataset.name, "source": dataset.source})
        with publish_dir(out_dir) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            metrics = {"heldout": scores, "history": result.history}
            write_json_atomic(staging / "metrics.json", metrics)
            seal_folder(staging, out_dir, manifest, metrics)
        log(f"held-out masked tokens: accuracy {100 * scores['accuracy']:.2f}%, loss "
            f"{scores['loss']:.3f}; {manifest['training']['tokens_per_s']:,} tokens/s; "
            f"backbone in [bold]{out_dir}[/] (make teacher ARGS=model=pretrained)")
    processes.barrier()
    return 0


def fitted_schedule(step: PretrainStep, config: PretrainConfig, work: Path, config_id: str,
                    log) -> list[int]:
    """The examples that `config.epochs` epochs can train within max_minutes, at the step
    rate measured now; recorded in `work`, so a resumed run trains the same ones."""
    plan_path = work / "schedule.json"
    if plan_path.is_file() and (plan := read_json(plan_path))["config"] == config_id:
        return plan["examples"]
    size = min(config.batch_size, len(step.examples))
    probe = random.Random(config.seed).sample(range(len(step.examples)), size)
    step(probe).backward()  # the first step warms up allocations; not timed
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        step(probe).backward()
    step.model.zero_grad(set_to_none=True)
    # The optimizer and the epochs' validation cost a share more than forward and backward.
    seconds = 1.15 * (time.perf_counter() - started) / PROBE_STEPS
    steps = max(1, int(config.max_minutes * 60 / seconds))
    wanted = min(len(step.examples), steps * config.batch_size // config.epochs)
    chosen = sorted(random.Random(config.seed).sample(range(len(step.examples)), wanted))
    log(f"time budget {config.max_minutes:g} min at {seconds:.2f} s a step: {steps:,} steps, "
        f"{wanted:,} of {len(step.examples):,} examples")
    write_json_atomic(plan_path, {"config": config_id, "examples": chosen})
    return chosen


if __name__ == "__main__":
    sys.exit(main())
