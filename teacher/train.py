"""Fine-tune the NER teacher: read data, train with resumable checkpoints, keep the best
epoch on valid, score it on test, publish runs/<run>/teacher.

    python -m teacher [--preset minilm|bert-base|bert-base-chinese|FILE.yaml] [--quick]
                      [--fresh] [key=value ...]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from rich.table import Table

from edgener.runtime.artifacts import MANIFEST, read_json, read_manifest, verify_files
from edgener.runtime.console import console
from edgener.runtime.coverage import Coverage, vocabulary_coverage
from edgener.runtime.encoding import Encoder
from edgener.runtime.errors import UserError
from edgener.training.backbone import build_token_classifier, load_tokenizer, resolve_model_source
from edgener.training.config import (
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
    TokenClassifierStep,
    evaluate,
    fit,
    score_splits,
    set_seed,
    torchrun_processes,
)
from edgener.training.publish import describe_model, fingerprint, make_manifest, publish_model
from teacher.config import TeacherConfig

PRETRAINED = "pretrained"  # model= shorthand for the run's own pretrained backbone


class VocabularyError(UserError):
    """So much of the training text is [UNK] to the backbone that it would train blind."""


def choose_preset(requested: str | None) -> tuple[str, str]:
    if requested:
        return requested, "requested"
    if torch.cuda.is_available():
        return "bert-base", f"CUDA is available ({torch.cuda.get_device_name(0)})"
    return "minilm", "no CUDA device, so the offline CPU preset"


def main(argv: list[str] | None = None, prog: str = "python -m teacher") -> int:
    parser = stage_parser(prog, __doc__, "teacher", "a slice of the data, fewer steps")
    args = parser.parse_args(argv)

    preset, reason = choose_preset(args.preset)
    config = load_config(TeacherConfig, preset_path("teacher", preset),
                         parse_overrides(args.overrides), args.quick)
    config.run = config.run or dataset_run_name(config.dataset)
    with torchrun_processes(config.threads) as processes:
        return train(config, preset, reason, processes, fresh=args.fresh)


def train(config: TeacherConfig, preset: str, reason: str, processes: Processes,
          fresh: bool) -> int:
    log = console.print if processes.is_main else (lambda *a, **k: None)
    run_dir = run_path(config.runs_dir, config.run)
    out_dir = run_dir / "teacher"
    config_id = fingerprint(as_dict(config))
    log(f"[bold]teacher[/]: preset [cyan]{preset}[/] ({reason}); model {config.model}")

    manifest_path = out_dir / MANIFEST
    if not fresh and manifest_path.is_file() and \
            read_json(manifest_path).get("config_fingerprint") == config_id:
        log(f"{out_dir} is up to date with this config; pass --fresh to retrain")
        return 0

    # Data and model
    dataset = load_dataset(config.dataset, config.data_dir, config.tag_scheme,
                           config.snap_spans, config.span_format)
    train_set = dataset.split("train")[: config.train_limit]
    valid_set = dataset.split("valid")[: config.eval_limit]
    test_set = dataset.split("test")[: config.eval_limit]
    labels = dataset.labels
    log(f"data: {dataset.source}: {len(train_set)} train, {len(valid_set)} valid, "
        f"{len(test_set)} test sentences; {len(labels)} labels")
    for split, summary in dataset.span_summaries().items():
        log(f"{split} spans: {summary}")
    source = backbone_source(config.model, run_dir)
    tokenizer = load_tokenizer(source)
    encoder = Encoder.from_transformers(tokenizer, labels, config.max_length,
                                        config.window_overlap, config.case_features,
                                        config.context_tokens, config.pack_documents)
    coverage = check_coverage(encoder, train_set, config, log)
    set_seed(config.seed)
    model = build_token_classifier(source, labels, config.case_features, config.dropout)
    model.to(processes.device)
    windows = encoder.encode_all([s.words for s in train_set], [s.tags for s in train_set],
                                 [s.document for s in train_set], config.context_dropout,
                                 config.seed)
    step = TokenClassifierStep(model, windows, tokenizer.pad_token_id, processes.device)

    def validate() -> float:
        return evaluate(model, encoder, valid_set, labels, config.eval_batch_tokens,
                        processes.device)["f1"]

    result = fit(step, model, [len(w.input_ids) for w in windows], validate, config,
                 run_dir / ".teacher-work", config_id, processes, fresh)
    if processes.is_main:
        publish(config, config_id, preset, model, tokenizer, encoder, labels, dataset,
                valid_set, test_set, coverage, result, processes, out_dir)
    processes.barrier()
    return 0


def backbone_source(model: str, run_dir: Path) -> str:
    """What transformers loads for `model`: `pretrained` is the run's own
    runs/<run>/pretrained (made by `make pretrain`)."""
    if model != PRETRAINED:
        return resolve_model_source(model)
    folder = run_dir / "pretrained"
    verify_files(folder, read_manifest(folder, "pretrained", "make pretrain"))
    return str(folder)


def check_coverage(encoder: Encoder, train_set: list, config: TeacherConfig,
                   log: Callable[..., None]) -> Coverage:
    """How much of train the backbone's vocabulary can read, said before training; a stop
    where so much is [UNK] that the model would train blind."""
    coverage = vocabulary_coverage(encoder, [s.words for s in train_set])
    where = f"train, with {config.model}'s vocabulary"
    if coverage.unknown_token_share > config.max_unknown_share:
        raise VocabularyError(
            f"{where}: {coverage.describe()}; the model cannot read them. Extend the "
            "vocabulary and pretrain on your text (make pretrain ARGS=\"mode=extend "
            "corpus=YOUR_TEXT\", then model=pretrained), use a backbone whose vocabulary "
            "covers this language (model=...), or train anyway with max_unknown_share=1")
    if coverage.unknown_token_share > config.warn_unknown_share:
        log(f"[yellow]warning[/]: {where}: {coverage.describe()}; the model sees nothing "
            "of those")
    else:
        log(f"vocabulary: {coverage.describe()} of train")
    return coverage


def publish(config, config_id, preset, model, tokenizer, encoder, labels, dataset,
            valid_set, test_set, coverage: Coverage, result: FitResult, processes,
            out_dir) -> None:
    """Score the best weights on valid and test, and write the teacher folder atomically."""
    shape = describe_model(model)
    metrics = {
        **score_splits(model, encoder, {"valid": valid_set, "test": test_set}, labels,
                       config.eval_batch_tokens, processes.device),
        "wall_time_s": result.wall_time_s, "steps": result.steps, "epochs": config.epochs,
        "best_epoch": result.best_epoch, "seed": config.seed, "history": result.history,
        "params": shape["params"], "processes": processes.world_size,
    }
    manifest = make_manifest(
        "teacher",
        preset=preset,
        config_fingerprint=config_id,
        model_source=config.model,
        **shape,
        labels=labels,
        encoding=encoder.settings(),
        dataset={"name": dataset.name, "source": dataset.source, "files": dataset.files,
                 "train_sentences": config.train_limit, "eval_sentences": config.eval_limit,
                 **({"snap_spans": dataset.snap_spans, "span_format": dataset.span_format,
                     "spans": dataset.span_summaries()} if dataset.span_counts else {})},
        valid_f1=metrics["valid"]["f1"],
        test_f1=metrics["test"]["f1"],
        vocabulary_coverage={"train": coverage.as_dict()},
    )
    publish_model(out_dir, model, tokenizer, labels, as_dict(config), metrics, manifest)
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
