"""Distill the teacher into small students, and train each student's shape without
distillation as its baseline; publish runs/<run>/students/<name>[-baseline].

    python -m distill [--preset minilm|bert-base|FILE.yaml] [--quick] [--fresh] [key=value ...]

Without --preset, the preset named like the teacher's is used.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from rich.table import Table

from distill.augment import mention_replaced
from distill.config import DistillConfig
from distill.distiller import DistillStep, TeacherCache, make_distiller
from distill.students import StudentSpec, build_student, derive_matches, layer_map
from edgener.runtime.artifacts import MANIFEST, read_json, read_manifest
from edgener.runtime.console import console
from edgener.runtime.encoding import Window
from edgener.runtime.text import split_words
from edgener.training.backbone import load_stage_model
from edgener.training.config import (
    ConfigError,
    as_dict,
    load_config,
    parse_overrides,
    preset_path,
    run_path,
    stage_parser,
)
from edgener.training.datasets import load_recorded_dataset
from edgener.training.loop import (
    Processes,
    TokenClassifierStep,
    evaluate,
    fit,
    score_splits,
    set_seed,
    torchrun_processes,
)
from edgener.training.publish import describe_model, fingerprint, make_manifest, publish_model

TEACHER_HINT = "make teacher"


def main(argv: list[str] | None = None, prog: str = "python -m distill") -> int:
    parser = stage_parser(prog, __doc__, "distill", "a slice of the data, fewer steps")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.overrides)

    preset = args.preset
    if preset is None:  # the teacher's own preset, which its manifest names
        run_dir = run_path(str(overrides.get("runs_dir", "runs")),
                           str(overrides.get("run", "conll2003")))
        preset = read_manifest(run_dir / "teacher", "teacher", TEACHER_HINT).get("preset")
    config = load_config(DistillConfig, preset_path("distill", preset), overrides, args.quick)
    if not config.students:
        raise ConfigError(f"preset {preset!r} defines no students")
    with torchrun_processes(config.threads) as processes:
        return distill(config, preset, processes, args.fresh)


def distill(config: DistillConfig, preset: str, processes: Processes, fresh: bool) -> int:
    log = console.print if processes.is_main else (lambda *a, **k: None)
    run_dir = run_path(config.runs_dir, config.run)
    teacher, tokenizer, labels, teacher_manifest, encoder = load_stage_model(
        run_dir / "teacher", "teacher", TEACHER_HINT)
    teacher.to(processes.device).eval()
    teacher_test_f1 = teacher_manifest["test_f1"]
    log(f"[bold]distill[/]: preset [cyan]{preset}[/]; teacher {describe_model(teacher)['layers']}"
        f" layers x {teacher.config.hidden_size}, test F1 {teacher_test_f1:.4f}")

    dataset = load_recorded_dataset(teacher_manifest, config.dataset, config.data_dir)
    if dataset.labels != labels:
        raise ConfigError(f"dataset {dataset.source} has labels {dataset.labels}, but the "
                          f"teacher was trained on {labels}")
    train_set = dataset.split("train")[: config.train_limit]
    splits = {"valid": dataset.split("valid")[: config.eval_limit],
              "test": dataset.split("test")[: config.eval_limit]}
    labeled = encoder.encode_all([s.words for s in train_set], [s.tags for s in train_set],
                                 [s.document for s in train_set], config.context_dropout,
                                 config.seed)
    unlabeled = read_unlabeled(config, encoder)
    specs = {name: StudentSpec(**spec) for name, spec in config.students.items()
             if not config.only or name in config.only}
    check_init_sources(specs)
    # Every student's augmented text is a prefix of the largest request (the same seeded
    # draws), so one teacher cache over labeled + unlabeled + augmented serves them all.
    copies = max((spec.augment_copies for spec in specs.values()), default=0)
    augmented = [encoder.encode_all([s.words for s in copy], None, [s.document for s in copy],
                                    config.context_dropout, config.seed + number)
                 for number, copy in enumerate(mention_replaced(train_set, copies, config.seed),
                                               start=1)]
    log(f"data: {len(train_set)} train sentences ({len(labeled)} windows)"
        + (f" + {len(unlabeled)} unlabeled windows" if unlabeled else "")
        + (f" + {copies} mention-replaced copies ({sum(map(len, augmented))} windows)"
           if augmented else ""))

    base_id = fingerprint({**as_dict(config), "students": None, "only": None,
                           "teacher": teacher_manifest["config_fingerprint"]})
    cache = None
    rows = []
    for name, spec in specs.items():
        for distilled in (True, False) if config.baselines else (True,):
            out_name = name if distilled else f"{name}-baseline"
            out_dir = run_dir / "students" / out_name
            recipe = dataclasses.asdict(spec)
            # Fields that came after the first students enter the fingerprint only when
            # they apply, so students published before them stay current; the baseline
            # trains on the labelled split alone, from the teacher.
            for later_field in ("augment_copies", "init_from"):
                if not distilled or not recipe[later_field]:
                    recipe.pop(later_field)
            source_dir = run_dir / "students" / str(spec.init_from)
            source_hint = f"python -m distill \"only=[{spec.init_from}]\""
            starts_from_student = distilled and spec.init_from is not None
            if starts_from_student:  # retraining the source makes this student stale too
                recipe["init_from"] = [spec.init_from, read_manifest(
                    source_dir, "student", source_hint).get("config_fingerprint")]
            config_id = fingerprint([base_id, recipe, distilled])
            if not fresh and is_up_to_date(out_dir, config_id):
                log(f"{out_dir} is up to date; pass --fresh to retrain")
                rows.append(read_json(out_dir / "metrics.json") | {"name": out_name})
                continue
            source = (load_stage_model(source_dir, "student", source_hint)[0]
                      if starts_from_student else teacher)
            student, copied = build_student(teacher, spec, config.seed, source)
            student.to(processes.device)
            set_seed(config.seed)
            if distilled:
                matches = check_matches(config.matches
                                        or derived_matches(config, student, teacher))
                if cache is None and config.cache_teacher:
                    every_window = labeled + unlabeled + [w for copy in augmented for w in copy]
                    cache = build_cache(config, teacher, every_window, specs, processes,
                                        tokenizer.pad_token_id)
                distiller = make_distiller(teacher, student, matches, config.temperature,
                                           config.kd_weight, config.hard_label_weight,
                                           str(run_dir / ".students-work"), processes.device)
                windows = labeled + unlabeled + [
                    w for copy in augmented[: spec.augment_copies] for w in copy]
                step = DistillStep(distiller, windows, tokenizer.pad_token_id,
                                   [tokenizer.cls_token_id, tokenizer.sep_token_id],
                                   processes.device, cache)
            else:
                matches, windows = [], labeled
                step = TokenClassifierStep(student, windows, tokenizer.pad_token_id,
                                           processes.device)
            log(f"\n[bold]{out_name}[/]: {spec.layers} layers x {student.config.hidden_size}, "
                f"{describe_model(student)['params'] / 1e6:.1f}M parameters, "
                + ("distilled" if distilled else "hard labels only"))

            def validate(student=student) -> float:
                return evaluate(student, encoder, splits["valid"], labels,
                                config.eval_batch_tokens, processes.device)["f1"]

            result = fit(step, student, [len(w.input_ids) for w in windows], validate, config,
                         run_dir / ".students-work" / out_name, config_id, processes, fresh)
            if processes.is_main:
                metrics = score_splits(student, encoder, splits, labels, config.eval_batch_tokens,
                                       processes.device)
                shape = describe_model(student)
                metrics |= {"params": shape["params"], "teacher_test_f1": teacher_test_f1,
                            "wall_time_s": result.wall_time_s, "steps": result.steps,
                            "epochs": config.epochs, "best_epoch": result.best_epoch,
                            "history": result.history, "seed": config.seed,
                            "processes": processes.world_size}
                manifest = make_manifest(
                    "student",
                    config_fingerprint=config_id,
                    name=out_name,
                    distilled=distilled,
                    **shape,
                    init={"from": f"students/{spec.init_from}" if starts_from_student
                          else "teacher", "tensors_copied": len(copied),
                          "layers": layer_map(spec.layers, source.config.num_hidden_layers)[1:]},
                    matches=matches,
                    losses={"kd": {"type": "ce", "weight": config.kd_weight,
                                   "temperature": config.temperature},
                            "hard_label_weight": config.hard_label_weight} if distilled
                    else {"hard_label_weight": 1.0},
                    teacher={"dir": str(run_dir / "teacher"), "test_f1": teacher_test_f1,
                             "params": describe_model(teacher)["params"]},
                    base_model=teacher_manifest.get("model_source"),  # for the model card
                    labels=labels,
                    encoding=encoder.settings(),
                    dataset=teacher_manifest["dataset"],
                    unlabeled_windows=len(unlabeled) if distilled else 0,
                    augment_copies=spec.augment_copies if distilled else 0,
                    teacher_cache={"seconds": round(cache.seconds, 1), "layers": cache.layers}
                    if distilled and cache else None,
                    valid_f1=metrics["valid"]["f1"],
                    test_f1=metrics["test"]["f1"],
                )
                publish_model(out_dir, student, tokenizer, labels, as_dict(config), metrics,
                              manifest)
                rows.append(metrics | {"name": out_name})
            processes.barrier()
    if processes.is_main:
        print_students(rows, teacher_test_f1, run_dir / "students")
    return 0


def check_init_sources(specs: dict[str, StudentSpec]) -> None:
    """A student can start from one trained earlier in the same call, never a later one."""
    order = list(specs)
    for name, spec in specs.items():
        if spec.init_from == name:
            raise ConfigError(f"student {name!r}: init_from names itself")
        if spec.init_from in specs and order.index(spec.init_from) > order.index(name):
            raise ConfigError(f"student {name!r} starts from {spec.init_from!r}, which is "
                              "trained after it; list the source first")


def derived_matches(config: DistillConfig, student, teacher) -> list[dict]:
    matches = derive_matches(student.config, teacher.config, config.hidden_loss,
                             config.hidden_weight)
    if config.mmd_weight > 0:
        matches += [{"layer_T": [m["layer_T"]] * 2, "layer_S": [m["layer_S"]] * 2,
                     "feature": "hidden", "loss": "mmd", "weight": config.mmd_weight}
                    for m in matches]
    return matches


def check_matches(matches: list[dict]) -> list[dict]:
    # The adaptors and the cache carry hidden states only; attention maps would need both.
    if any(m.get("feature") != "hidden" for m in matches):
        raise ConfigError("matches: only feature 'hidden' is supported")
    return matches


def teacher_layers(matches: list[dict]) -> set[int]:
    layers = set()
    for match in matches:
        value = match["layer_T"]
        layers |= set(value) if isinstance(value, list) else {value}
    return layers


def build_cache(config: DistillConfig, teacher, windows: list[Window], specs, processes,
                pad_id: int) -> TeacherCache:
    """One pass of the teacher over every training window, for every student's matches."""
    layers = {layer for spec in specs.values()
              for layer in layer_map(spec.layers, teacher.config.num_hidden_layers)}
    if config.matches:
        layers = teacher_layers(config.matches)
    cache = TeacherCache(teacher, windows, sorted(layers), config.eval_batch_tokens,
                         processes.device, pad_id)
    if processes.is_main:
        console.print(f"teacher outputs cached for {len(windows)} windows (hidden states "
                      f"{cache.layers}) in {cache.seconds:.0f} s, {cache.megabytes:.0f} MB")
    return cache


def read_unlabeled(config: DistillConfig, encoder) -> list[Window]:
    if not config.unlabeled_text:
        return []
    path = Path(config.unlabeled_text)
    if not path.is_file():
        raise ConfigError(f"unlabeled_text: {path} does not exist")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    sentences = [[w.text for w in split_words(line)] for line in lines]
    sentences = [s for s in sentences if s][: config.unlabeled_limit]
    return encoder.encode_all(sentences)


def is_up_to_date(out_dir: Path, config_id: str) -> bool:
    path = out_dir / MANIFEST
    return path.is_file() and read_json(path).get("config_fingerprint") == config_id


def print_students(rows: list[dict], teacher_f1: float, where: Path) -> None:
    table = Table(title=f"Students (teacher test F1 {100 * teacher_f1:.2f})")
    table.add_column("student", no_wrap=True)
    for column in ("params", "test F1", "F1 kept", "gain over baseline", "time"):
        table.add_column(column, justify="right")
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        baseline = by_name.get(f"{row['name']}-baseline")
        gain = (f"{100 * (row['test']['f1'] - baseline['test']['f1']):+.2f}"
                if baseline else "")
        table.add_row(row["name"], f"{row['params'] / 1e6:.1f}M",
                      f"{100 * row['test']['f1']:.2f}",
                      f"{100 * row['test']['f1'] / teacher_f1:.1f}%" if teacher_f1 else "-", gain,
                      f"{row['wall_time_s'] / 60:.1f} min")
    console.print(table)
    console.print(f"students in [bold]{where}[/]")


if __name__ == "__main__":
    sys.exit(main())
