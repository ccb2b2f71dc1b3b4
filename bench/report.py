"""Measure every artifact of a run beside what users would otherwise run, on this machine,
and publish runs/<run>/report/ (report.md, report.json, report.png).

    python -m bench.report [--preset default|FILE.yaml] [--quick] [key=value ...]

Rows: the teacher in Hugging Face PyTorch eager FP32 (the default a user runs, and the
reference of every ratio), the distilled students, every quantized artifact, and two more
peers built from the teacher: PyTorch dynamic INT8 (torch.ao) and ONNX Runtime dynamic
INT8 of the unfused export (what a default Optimum quantization gives). Each row is
measured in a fresh process, one after another, at a fixed thread count.

Every row records its device. On a machine with CUDA the teacher and the students also run
on the GPU, in FP32, FP16 and INT8 (torch._int_mm), beside the TensorRT artifacts; each
device is its own comparison: speedups against the eager teacher on that device, and a
Pareto frontier, a panel of the plot and a recommendation for each.

This module is the recipe: it finds the rows, measures each (bench.measure; every CPU row
timed beside the ORT peer, which pairs its ratios), then hands the rows on: speedups,
frontiers and the recommendations are computed in bench.analysis, the console table and
report.md written by bench.render, the figure drawn by bench.plot.

This module's top level imports neither torch nor transformers: each row's process is
spawned, and spawn re-imports the main module (this one, under `python -m bench.report`)
in it, so an ONNX Runtime row's peak memory would otherwise include the PyTorch stack.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.analysis import EAGER, ORT_PEER, REFERENCES, add_ratios, device_summaries
from bench.config import ReportConfig
from bench.floor import gemm_gflops
from bench.measure import (
    ARTIFACT,
    ORT_DYNAMIC_INT8,
    PYTORCH,
    TORCH_DYNAMIC_INT8,
    Candidate,
    Settings,
    evenly_spaced,
    isolated,
    measure,
    sentence_texts,
    source_model_folder,
    state_dict_mb,
    torch_dynamic_int8,
)
from bench.plot import plot
from bench.render import markdown, print_table
from edgener.runtime.artifacts import (
    MANIFEST,
    publish_dir,
    read_json,
    read_manifest,
    write_json_atomic,
)
from edgener.runtime.console import console
from edgener.training.config import (
    ConfigError,
    as_dict,
    load_config,
    parse_overrides,
    preset_path,
    stage_parser,
)
from edgener.training.datasets import load_recorded_dataset
from edgener.training.publish import machine
from edgener.training.stage import run_stage

GPU_PRECISIONS = ("fp16", "int8")  # besides FP32, how the PyTorch models may run on CUDA


def main(argv: list[str] | None = None, prog: str = "python -m bench.report") -> int:
    parser = stage_parser(prog, __doc__, "report", "fewer sentences", fresh=None,
                          preset="default")
    args = parser.parse_args(argv)
    # The plot is drawn last: a missing matplotlib must not cost the measurements first.
    import matplotlib  # noqa: F401
    config = load_config(ReportConfig, preset_path("report", args.preset),
                         parse_overrides(args.overrides), args.quick)
    # ONNX Runtime's quantizer logs advice on the root logger at every call.
    logging.getLogger().setLevel(logging.ERROR)
    command = "python -m bench.report " + " ".join(argv if argv is not None else sys.argv[1:])
    return report(config, command.strip())


def report(config: ReportConfig, command: str) -> int:
    """Measure the run's rows one by one, then publish report.json, report.md and
    report.png together and print the table."""
    started = time.time()
    unknown = sorted(set(config.cuda_precisions) - set(GPU_PRECISIONS))
    if unknown:
        raise ConfigError(f"cuda_precisions: unknown {', '.join(unknown)}; known: "
                          f"{', '.join(GPU_PRECISIONS)} (FP32 always runs: it is the GPU's "
                          "reference)")
    run_dir = Path(config.runs_dir) / config.run
    teacher = read_manifest(run_dir / "teacher", "teacher", "make teacher")
    dataset = load_recorded_dataset(teacher, config.dataset, config.data_dir)
    test = dataset.split("test")[: config.test_limit]
    candidates = find_candidates(run_dir, config)
    console.print(f"[bold]report[/]: {len(candidates)} rows from {run_dir}; F1 on "
                  f"{len(test)} test sentences; {config.threads} threads")

    with console.status("measuring matrix throughput"):
        gemm = isolated(gemm_gflops, config.threads)
    console.print(f"matrix throughput: FP32 {gemm['fp32']:.0f} GFLOP/s, "
                  f"INT8 {gemm['int8']:.0f} GOP/s")
    settings = Settings(config.threads, config.batch_tokens, config.warmup,
                        config.latency_rounds, config.throughput_rounds, gemm)
    words, tags = [s.words for s in test], [s.tags for s in test]
    documents = [s.document for s in test]
    latency_texts = sentence_texts(
        [words[i] for i in evenly_spaced(config.latency_sentences, len(words))])

    anchor = next((c for c in candidates if c.kind == ORT_DYNAMIC_INT8), None)
    rows, failed = [], []
    # Redrawn only between rows: a bar refreshing while a row is timed wakes this process
    # ten times a second, and on two cores that preempts the row's ONNX Runtime threads.
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, auto_refresh=False) as progress:
        task = progress.add_task("measuring", total=len(candidates))
        # The anchor first: every other row loads it, so if it cannot be measured, the
        # rest are timed without it rather than all failing.
        for candidate in sorted(candidates, key=lambda c: c is not anchor):
            progress.update(task, description=f"measuring {candidate.name}", refresh=True)
            tick = time.time()
            # The anchor is a CPU row: GPU rows are compared with the GPU's eager teacher.
            paired = anchor if candidate.device == "cpu" and candidate is not anchor else None
            try:
                row = isolated(measure, candidate, settings, words, tags, latency_texts,
                               paired, documents)
            except Exception as error:  # one broken artifact must not sink the report
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
                progress.console.print(f"[red]{candidate.name} failed[/]: {message}")
                failed.append({"name": candidate.name, "device_type": candidate.device,
                               "source": candidate.source, "error": message})
                if candidate is anchor:
                    anchor = None
            else:
                rows.append(row | {"source": candidate.source,
                                   "measure_s": round(time.time() - tick, 1)})
            progress.advance(task)
            progress.refresh()

    order = [c.name for c in candidates]
    rows.sort(key=lambda r: order.index(r["name"]))
    add_ratios(rows, anchor.name if anchor else None)
    wall = time.time() - started
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": command,
        "machine": machine(),
        "threads": config.threads,
        "gemm_gflops": gemm,
        "settings": as_dict(config),
        "test_sentences": len(test),
        "rows": rows,
        "failed": failed,
        "devices": device_summaries(rows, config.max_f1_drop),
        "wall_s": round(wall, 1),
    }
    out = run_dir / "report"
    with publish_dir(out) as staging:
        write_json_atomic(staging / "report.json", result)
        (staging / "report.md").write_text(markdown(result), encoding="utf-8")
        plot(result, staging / "report.png")
    print_table(result)
    console.print(f"report in [bold]{out}[/] ({wall / 60:.1f} min)")
    return 0


def find_candidates(run_dir: Path, config: ReportConfig) -> list[Candidate]:
    """The teacher and its peers, the students, every quantized artifact, then (on a CUDA
    machine) the teacher and the students on the GPU."""
    teacher = run_dir / "teacher"
    rows = [Candidate(EAGER, PYTORCH, teacher, "pytorch", "fp32", True, teacher,
                      weights_mb(teacher), EAGER)]
    if config.peers:
        rows += peers(run_dir, teacher)
    students = run_dir / "students"
    models = [(EAGER, teacher)] + [
        (folder.name, folder) for folder in sorted(students.glob("*"))
        if students.is_dir() and (folder / MANIFEST).is_file()
        and (config.baselines or not folder.name.endswith("-baseline"))]
    rows += [Candidate(name, PYTORCH, folder, "pytorch", "fp32", False, folder,
                       weights_mb(folder), name) for name, folder in models[1:]]
    gpu = config.cuda and cuda_available()
    quantized = run_dir / "quantized"
    for folder in sorted(quantized.glob("*")) if quantized.is_dir() else []:
        if not (folder / MANIFEST).is_file():
            continue
        manifest = read_json(folder / MANIFEST)
        source = manifest["source_name"]
        if source.endswith("-baseline") and not config.baselines:
            continue
        engine = manifest["backend"] in ("tensorrt", "torch-tensorrt")
        if engine and not gpu:
            console.print(f"[yellow]skipping {folder.name}[/]: a TensorRT engine, and "
                          "this machine has no CUDA device" + ("" if config.cuda else
                                                                " in use (cuda=false)"))
            continue
        rows.append(Candidate(folder.name, ARTIFACT, folder, manifest["backend"],
                              manifest["precision"], False, source_model_folder(run_dir, source),
                              manifest["size_mb"], source, device="cuda" if engine else "cpu"))
    if gpu:
        rows += [Candidate(f"{name}-cuda-{precision}", PYTORCH, folder, "pytorch", precision,
                           name == EAGER, folder, None, name, device="cuda")
                 for name, folder in models for precision in ("fp32", *config.cuda_precisions)]
    elif config.cuda and config.cuda_precisions:
        console.print("[yellow]no GPU rows[/]: this machine has no CUDA device")
    if config.artifacts is not None:
        # Ratios need each device's eager teacher and the peer that anchors the CPU's.
        wanted = set(config.artifacts) | set(REFERENCES.values()) | {ORT_PEER}
        rows = [row for row in rows if row.name in wanted]
    return rows


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def peers(run_dir: Path, teacher: Path) -> list[Candidate]:
    """The teacher quantized as a user would without this toolkit: PyTorch dynamic INT8,
    and ONNX Runtime dynamic INT8 of the unfused export (built here, if exported)."""
    found = [Candidate(f"{EAGER}-{TORCH_DYNAMIC_INT8}", TORCH_DYNAMIC_INT8, teacher,
                       "pytorch", "int8", True, teacher,
                       round(state_dict_mb(torch_dynamic_int8(teacher)), 2), EAGER)]
    exported = run_dir / "quantized" / f"{EAGER}-onnx-fp32" / "model.onnx"
    if not exported.is_file():
        console.print(f"[yellow]skipping the ONNX Runtime dynamic INT8 peer[/]: {exported} "
                      "is missing (make quantize exports it)")
        return found
    from onnxruntime.quantization import quantize_dynamic

    path = run_dir / ".report-work" / f"{EAGER}-{ORT_DYNAMIC_INT8}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(exported, path)  # the library's defaults, no graph fusions
    found.append(Candidate(ORT_PEER, ORT_DYNAMIC_INT8, teacher,
                           "onnxruntime", "int8", True, teacher,
                           round(path.stat().st_size / 2**20, 2), EAGER, path))
    return found


def weights_mb(folder: Path) -> float:
    """A Hugging Face folder's weights on disk, in MiB."""
    return round(sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20, 2)


if __name__ == "__main__":
    sys.exit(run_stage(main))
