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

Ratios are paired: in every row's process, its latency rounds alternate with the ORT peer's
(cheap to time, so it anchors every row), and a speedup is the median over rounds of the
two p50s' ratio; the speedup over the eager teacher is the row's over the peer divided by
the teacher's over the peer. On a shared machine whose speed drifts by tens of percent
within minutes, ratios between rows timed minutes apart would carry that drift.

The report recommends one artifact per device: the fastest whose test F1 is within
`max_f1_drop` points of the eager teacher's, and says why.

This module's top level imports neither torch nor transformers: each row's process is
spawned, and spawn re-imports the main module (this one, under `python -m bench.report`)
in it, so an ONNX Runtime row's peak memory would otherwise include the PyTorch stack.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.config import ReportConfig
from bench.measure import (
    ARTIFACT,
    ORT_DYNAMIC_INT8,
    PYTORCH,
    TORCH_DYNAMIC_INT8,
    Candidate,
    Settings,
    evenly_spaced,
    gemm_gflops,
    measure,
    sentence_texts,
    source_model_folder,
    state_dict_mb,
    torch_dynamic_int8,
)
from edgener.artifacts import (
    MANIFEST,
    machine,
    publish_dir,
    read_json,
    read_manifest,
    write_json_atomic,
)
from edgener.cli import console, print_wide, run_stage
from edgener.config import ConfigError, as_dict, load_config, parse_overrides, preset_path
from edgener.data import load_dataset, recorded_dataset

EAGER = "teacher"  # the row every CPU speedup is relative to
ORT_PEER = f"{EAGER}-{ORT_DYNAMIC_INT8}-unfused"  # the peer every CPU row is timed beside
# Each device's eager teacher: what that device's speedups are counted from.
REFERENCES = {"cpu": EAGER, "cuda": f"{EAGER}-cuda-fp32"}
DEVICE_LABELS = {"cpu": "CPU", "cuda": "GPU"}
GPU_PRECISIONS = ("fp16", "int8")  # besides FP32, how the PyTorch models may run on CUDA


def main(argv: list[str] | None = None, prog: str = "python -m bench.report") -> int:
    parser = argparse.ArgumentParser(prog=prog,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", help="preset under configs/report")
    parser.add_argument("--quick", action="store_true", help="fewer sentences")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
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
    started = time.time()
    unknown = sorted(set(config.cuda_precisions) - set(GPU_PRECISIONS))
    if unknown:
        raise ConfigError(f"cuda_precisions: unknown {', '.join(unknown)}; known: "
                          f"{', '.join(GPU_PRECISIONS)} (FP32 always runs: it is the GPU's "
                          "reference)")
    run_dir = Path(config.runs_dir) / config.run
    teacher = read_manifest(run_dir / "teacher", "teacher", "make teacher")
    dataset = load_dataset(config.dataset or recorded_dataset(teacher), config.data_dir)
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
                               paired)
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


def isolated(function, *args):
    """function(*args) in a fresh process: each artifact's memory peak is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet_child) as pool:
        return pool.submit(function, *args).result()


def _quiet_child() -> None:
    # ONNX Runtime's quantizer logs on the root logger. Rows that run on PyTorch quiet
    # transformers and torch when they load them (bench.measure.prepare_torch): doing it
    # here would import both into every row's process, the lean ones' too.
    logging.getLogger().setLevel(logging.ERROR)


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
    return round(sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20, 2)


def by_device(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by device type, the CPU's first, each group in the rows' order."""
    groups: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["device_type"] != "cpu"):
        groups.setdefault(row["device_type"], []).append(row)
    return groups


def add_ratios(rows: list[dict], anchor: str | None) -> None:
    """Speedups against the eager teacher on the row's own device and against the ORT
    peer (CPU rows), F1 change against that teacher, distance to the floor. Rows timed
    beside the anchor use the paired ratios (see the module notes); the others, ratios of
    p50s measured in different processes."""
    for device, group in by_device(rows).items():
        eager = next((r for r in group if r["name"] == REFERENCES[device]), None)
        peer = next((r for r in group if r["name"] == anchor), None)
        for row in group:
            row["speedup_vs_peer"] = paired_ratio(row, anchor) or (
                peer["p50_ms"] / row["p50_ms"] if peer else None)
        for row in group:
            if eager is None:
                row["speedup_vs_eager"] = None
            elif row["speedup_vs_peer"] is not None and eager["speedup_vs_peer"] is not None:
                row["speedup_vs_eager"] = row["speedup_vs_peer"] / eager["speedup_vs_peer"]
            else:
                row["speedup_vs_eager"] = eager["p50_ms"] / row["p50_ms"]
            row["f1_change_vs_teacher"] = row["test_f1"] - eager["test_f1"] if eager else None
            row["floor_ratio"] = row["p50_ms"] / row["floor_ms"] if row["floor_ms"] else None


def device_summaries(rows: list[dict], max_f1_drop: float) -> list[dict]:
    """Per device (the CPU's first): its name, its reference row, whether its ratios are
    paired, its Pareto frontier and its recommendation."""
    summaries = []
    for device, group in by_device(rows).items():
        reference = REFERENCES[device]
        summaries.append({
            "type": device, "name": group[0]["device"], "reference": reference,
            "anchored": any(r.get("vs_anchor_rounds") for r in group),
            "pareto": pareto_front([(r["name"], r["p50_ms"], r["test_f1"]) for r in group]),
            "recommendation": recommend(group, max_f1_drop, reference,
                                        DEVICE_LABELS[device])})
    return summaries


def paired_ratio(row: dict, anchor: str | None) -> float | None:
    """The anchor's p50 over the row's, median over rounds timed in one process."""
    if anchor is not None and row["name"] == anchor:
        return 1.0
    return statistics.median(row["vs_anchor_rounds"]) if row.get("vs_anchor_rounds") else None


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point beats: none is at least as fast and at least as
    accurate while strictly better in one (latency lower is better, F1 higher)."""
    front = []
    for name, latency, f1 in points:
        dominated = any(other_latency <= latency and other_f1 >= f1 and
                        (other_latency < latency or other_f1 > f1)
                        for _, other_latency, other_f1 in points)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: next(p[1] for p in points if p[0] == n))


def recommend(rows: list[dict], max_f1_drop: float, reference: str = EAGER,
              device: str = "CPU") -> dict:
    """Of one device's rows, the fastest artifact (a peer is no artifact of this run) whose
    test F1 is at most `max_f1_drop` points below the eager teacher's (the `reference`
    row), with a plain summary and the reason it was chosen; "artifact" is None, and the
    summary says why, when none qualifies."""
    eager = next((r for r in rows if r["name"] == reference), None)
    artifacts = [r for r in rows if not r["is_peer"]]
    found = {"artifact": None, "max_f1_drop": max_f1_drop, "measured": len(artifacts),
             "within_budget": 0}
    if eager is None:
        return found | {"summary": f"no recommendation on the {device}: the eager teacher "
                                   "was not measured there, and the F1 budget and speedups "
                                   "are counted from it",
                        "reason": ""}
    if not artifacts:
        return found | {"summary": f"no recommendation on the {device}: no artifact besides "
                                   "the teacher and its peers was measured", "reason": ""}
    # F1 is a fraction; the budget is in points. The small slack keeps a drop of exactly
    # the budget inside it despite float rounding.
    eligible = [r for r in artifacts
                if 100 * (eager["test_f1"] - r["test_f1"]) <= max_f1_drop + 1e-9]
    found["within_budget"] = len(eligible)
    if not eligible:
        closest = max(artifacts, key=lambda r: r["test_f1"])
        return found | {
            "summary": f"no artifact on the {device} is within {max_f1_drop:g} F1 points of "
                       f"the eager teacher; the most accurate, {closest['name']}, is "
                       f"{trade_off(closest, eager)}",
            "reason": f"raise max_f1_drop (now {max_f1_drop:g}) to accept a larger F1 loss"}
    # The paired speedup ranks them (steadier than p50s taken minutes apart); ties go to
    # the more accurate.
    best = max(eligible, key=lambda r: (r["speedup_vs_eager"], r["test_f1"]))
    return found | {
        "artifact": best["name"], "backend": best["backend"], "precision": best["precision"],
        "speedup_vs_eager": best["speedup_vs_eager"],
        "f1_change_points": 100 * (best["test_f1"] - eager["test_f1"]),
        "summary": f"recommended on the {device}: {best['name']} — {trade_off(best, eager)}",
        "reason": f"the fastest of the {len(eligible)} of {len(artifacts)} measured artifacts "
                  f"whose test F1 is within {max_f1_drop:g} points of the eager teacher's "
                  f"(the max_f1_drop setting)"}


def trade_off(row: dict, eager: dict) -> str:
    """'9.8x faster than the eager teacher at 0.42 F1 points below it', in words."""
    points = 100 * (row["test_f1"] - eager["test_f1"])
    f1 = ("the same F1" if abs(points) < 0.005 else
          f"{abs(points):.2f} F1 points {'below' if points < 0 else 'above'} it")
    return f"{row['speedup_vs_eager']:.1f}x faster than the eager teacher at {f1}"


COLUMNS = ("artifact", "backend", "prec.", "test F1", "p50 ms", "± ms", "p99 ms", "x floor",
           "sent/s 1", "sent/s batched", "x batch-1", "model x floor", "text ms", "≠ alone",
           "MB", "RSS MB", "x eager", "x peer")


def cells(row: dict) -> list[str]:
    def number(value, fmt, unit=""):
        return "–" if value is None else format(value, fmt) + unit

    return [row["name"] + (" (peer)" if row["is_peer"] else ""), row["backend"],
            row["precision"], f"{100 * row['test_f1']:.2f}", f"{row['p50_ms']:.2f}",
            f"{row['p50_spread_ms']:.2f}", f"{row['p99_ms']:.2f}",
            number(row["floor_ratio"], ".1f"), f"{row['batch1_sps']:.0f}",
            f"{row['batched_sps']:.0f}", f"{row['batched_vs_batch1']:.2f}x",
            number(row["batched_floor_ratio"], ".1f"), f"{row['batched_text_ms']:.3f}",
            str(row["batched_differs"]), f"{row['size_mb']:.1f}", f"{row['peak_rss_mb']:.0f}",
            number(row["speedup_vs_eager"], ".2f", "x"),
            number(row["speedup_vs_peer"], ".2f", "x")]


def device_title(device: dict, threads: int) -> str:
    """'CPU: AMD EPYC 7B13, 2 threads' or 'GPU: NVIDIA H200'."""
    label = DEVICE_LABELS[device["type"]]
    return f"{label}: {device['name']}" + (f", {threads} threads" if device["type"] == "cpu"
                                           else "")


def device_rows(result: dict, device: dict) -> list[dict]:
    return [r for r in result["rows"] if r["device_type"] == device["type"]]


def print_table(result: dict) -> None:
    for device in result["devices"]:
        table = Table(title=f"Latency against F1 on the {device_title(device, result['threads'])}"
                            " (★ Pareto frontier; speedups against the eager teacher on this "
                            "device" + (" and the ORT peer)" if device["type"] == "cpu" else ")"))
        for index, column in enumerate(COLUMNS):
            table.add_column(column, justify="left" if index < 3 else "right",
                             no_wrap=index == 0)
        for row in device_rows(result, device):
            front = row["name"] in device["pareto"]
            values = cells(row)
            if front:
                values[0] = "★ " + values[0]
            table.add_row(*values, style="dim" if row["is_peer"] else ("bold" if front else ""))
        print_wide(table, 230)  # eighteen columns
    for failure in result["failed"]:
        console.print(f"[red]not measured[/]: {failure['name']}: {failure['error']}")
    for device in result["devices"]:
        recommendation = device["recommendation"]
        console.print(f"[bold]{recommendation['summary']}[/]", highlight=False)
        if recommendation["reason"]:
            console.print(f"  {recommendation['reason']}", highlight=False)


def markdown(result: dict) -> str:
    gemm = result["gemm_gflops"]
    lines = [
        "# edge-ner report",
        "",
        f"- date: {result['date']}",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}; {result['threads']} threads",
        f"- matrix throughput of the CPU (same run): FP32 {gemm['fp32']:.0f} GFLOP/s "
        f"(PyTorch GEMM), INT8 {gemm['int8']:.0f} GOP/s (ONNX Runtime MatMulInteger)",
        f"- test F1 on {result['test_sentences']} sentences, batched as the runtime batches; "
        f"latency: text in, entities out, batch 1, "
        f"{result['settings']['latency_sentences']} test sentences x "
        f"{result['settings']['latency_rounds']} rounds after "
        f"{result['settings']['warmup']} warm-up calls (± is the spread of p50 across "
        "rounds)",
        f"- throughput over the test split, {result['settings']['throughput_rounds']} "
        "alternating rounds: `sent/s 1` one text a call; `sent/s batched` all texts in one "
        "call, the runtime's token-budget batching (windows sorted by length across the call, "
        f"{result['settings']['batch_tokens']} padded tokens a model call); `x batch-1` the "
        "paired ratio; `model x floor` the batched model calls' time over the floor of the "
        "tokens they ran, padding included; `text ms` the work around the model (words, "
        "subwords, decoding, entities) per text; `≠ alone` the test texts whose entities "
        "batched differ from alone (a type or span, or a score by more than 0.001)",
        "- floor (CPU rows): FLOPs from the model's shape over the matrix throughput of its "
        "precision; `x floor` is batch 1's p50 over the median sentence's",
        "- each device is compared on its own: `x eager` is the speedup against the teacher "
        "in Hugging Face PyTorch eager FP32 on the same device, and the frontier and the "
        "recommendation are the device's",
        f"- wall time: {result['wall_s'] / 60:.1f} min",
    ]
    for device in result["devices"]:
        lines += ["", f"## {device_title(device, result['threads'])}", ""]
        if device["type"] == "cpu":
            lines += ["x peer: speedup against the teacher's ONNX Runtime dynamic INT8 "
                      "(unfused); " + (
                          "paired: each row's latency rounds alternate with the peer's in the "
                          "row's own process, a ratio is the median over rounds, and x eager "
                          "is the row's x peer over the teacher's" if device["anchored"] else
                          "ratios of p50s measured in separate processes") + ".", ""]
        else:
            lines += ["Ratios of p50s measured in separate processes, against "
                      f"`{device['reference']}`.", ""]
        lines += ["| " + " | ".join(COLUMNS) + " |",
                  "|" + "|".join(["---"] * 3 + ["---:"] * (len(COLUMNS) - 3)) + "|"]
        for row in device_rows(result, device):
            values = cells(row)
            if row["name"] in device["pareto"]:
                values[0] = f"**{values[0]}** ★"
            lines.append("| " + " | ".join(values) + " |")
        recommendation = device["recommendation"]
        lines += ["", "★: on this device's Pareto frontier of latency against F1.", "",
                  "### Recommendation", "", recommendation["summary"] + "."]
        if recommendation["reason"]:
            lines += ["", recommendation["reason"][0].upper() + recommendation["reason"][1:]
                      + "."]
    if result["failed"]:
        lines.append("")
    for failure in result["failed"]:
        lines.append(f"- not measured: {failure['name']}: {failure['error']}")
    return "\n".join(lines) + "\n"


DPI = 120  # of the figure and of the saved PNG alike, so pixels placed are pixels saved


def plot(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = draw([(device_title(device, result["threads"]), device_rows(result, device),
                    device["pareto"]) for device in result["devices"]])
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def draw(panels: list[tuple[str, list[dict], list[str]]]):
    """The report's figure: one panel per device (title, rows, frontier), each latency (log
    axis, plain milliseconds) against F1 with its Pareto frontier and every point labelled
    inside the plotting area. Devices get panels of their own: a GPU's and a CPU's
    latencies lie decades apart, and each device is its own choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, grid = plt.subplots(1, len(panels), figsize=(10 * len(panels), 6.5), dpi=DPI,
                                squeeze=False)
    for axes, (title, rows, frontier) in zip(grid[0], panels, strict=True):
        for row in rows:
            marker, colour = ("s", "tab:grey") if row["is_peer"] else (
                ("o", "tab:blue") if row["precision"] == "int8" else ("^", "tab:orange"))
            axes.scatter(row["p50_ms"], 100 * row["test_f1"], marker=marker, color=colour,
                         edgecolors="black" if row["name"] in frontier else "none", s=60,
                         zorder=3)
        front = [r for name in frontier for r in rows if r["name"] == name]
        axes.plot([r["p50_ms"] for r in front], [100 * r["test_f1"] for r in front], "--",
                  color="tab:green", label="Pareto frontier", zorder=2)
        axes.set_xscale("log")
        axes.margins(x=0.06, y=0.08)  # room for the end markers, and labels beside them
        plain_milliseconds(axes)
        axes.set_xlabel("batch-1 p50 latency (ms)")
        axes.set_ylabel("test entity F1 (%)")
        axes.set_title(f"{title}\nlatency against F1 (text in, entities out; log axis)")
        axes.grid(True, which="both", alpha=0.3)
    for marker, colour, label in (("^", "tab:orange", "FP32 / FP16"), ("o", "tab:blue", "INT8"),
                                  ("s", "tab:grey", "peer (from the teacher)")):
        grid[0][0].scatter([], [], marker=marker, color=colour, label=label)
    grid[0][0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, frameon=False)
    figure.tight_layout()
    # After the layout: placing labels works in pixels, which the layout would move.
    for axes, (_, rows, _) in zip(grid[0], panels, strict=True):
        place_labels(axes, [(r["name"], r["p50_ms"], 100 * r["test_f1"]) for r in rows])
    return figure


def plain_milliseconds(axes) -> None:
    """Label the log latency axis in plain numbers ("0.5", "2", "10"), not matplotlib's
    default 10^k and its 3 x 10^0 minor labels, which a reader has to decode."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    low, high = axes.get_xlim()  # settles autoscaling; fixed below so ticks stay put
    axes.set_xlim(low, high)
    axes.xaxis.set_major_locator(FixedLocator(log_ticks(low, high)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_ms(value)))
    axes.xaxis.set_minor_locator(LogLocator(subs="auto"))
    axes.xaxis.set_minor_formatter(NullFormatter())


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks at 1, 2 and 5 times each power of ten within [low, high] (only the powers
    over more than three decades, where those would crowd); on a range too short for three
    of them, at every whole multiple; at the ends if even those miss it."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = ((1,),) if math.log10(high / low) > 3 else ((1, 2, 5), range(1, 10))
    ticks: list[float] = []
    for multiples in steps:
        ticks = [m * 10.0**e for e in range(first, last + 1) for m in multiples
                 if low <= m * 10.0**e <= high]
        if len(ticks) >= 3:
            return ticks
    return ticks if len(ticks) >= 2 else [low, high]


def format_ms(value: float) -> str:
    """0.05 -> "0.05", 2.5 -> "2.5", 150 -> "150", 1200 -> "1200": never an exponent."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


# Where a point's label may go, in points from the marker, tried in order: right above,
# right below, left above, left below, then the same a line (9 pt) further out each time.
# Six lines each way: a crowd in a corner of the plot (the fast INT8 variants of one
# model, say) has labels on one side only, stacked.
LABEL_OFFSETS = [offset for line in range(6)
                 for offset in ((5, 3 + 9 * line), (5, -10 - 9 * line),
                                (-5, 3 + 9 * line), (-5, -10 - 9 * line))]
NEAR_OFFSETS = 4  # the first places touch the marker; from the fifth a line is drawn
MARKER_RADIUS_PT = 4  # the scatter's s=60 (area in pt^2) is a marker about 8 pt across


def place_labels(axes, points: list[tuple[str, float, float]]) -> list:
    """Label each (name, x, y) beside its marker at the first offset where the label stays
    inside the plotting area and covers no other label and no marker: rows of one model
    sit close together, a label drawn over another label or point cannot be read, and a
    label past the figure's edge is cut off. Where no place inside is clear of both, the
    first inside clear of labels; else the first inside; where none is inside (a name
    wider than the room on either side), the first, pushed inside. Returns the labels."""
    from matplotlib.transforms import Bbox

    renderer = axes.figure.canvas.get_renderer()
    axes.get_xlim()  # settles pending autoscaling, so the pixel positions below are final
    area = axes.get_window_extent(renderer)
    radius = MARKER_RADIUS_PT * axes.figure.dpi / 72
    markers = [Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)
               for px, py in axes.transData.transform([(x, y) for _, x, y in points])]
    placed, annotations = [], []
    for name, x, y in points:
        # A leader line ties a label pushed to the outer places back to its point.
        label = axes.annotate(name, (x, y), fontsize=7, textcoords="offset points",
                              xytext=LABEL_OFFSETS[0],
                              arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.5,
                                          "shrinkA": 1, "shrinkB": radius})
        boxes = {offset: label_box(label, offset, renderer) for offset in LABEL_OFFSETS}
        inside = [offset for offset, box in boxes.items() if within(box, area)]
        clear_of_labels = [offset for offset in inside
                           if not any(boxes[offset].overlaps(other) for other in placed)]
        clear_of_all = [offset for offset in clear_of_labels
                        if not any(boxes[offset].overlaps(m) for m in markers)]
        chosen = (clear_of_all or clear_of_labels or inside or LABEL_OFFSETS)[0]
        box = label_box(label, chosen, renderer)
        if not within(box, area):
            box = push_inside(label, box, area, renderer)
        label.arrow_patch.set_visible(tuple(label.get_position())
                                      not in LABEL_OFFSETS[:NEAR_OFFSETS])
        placed.append(box)
        annotations.append(label)
    return annotations


def within(box, area) -> bool:
    return (box.x0 >= area.x0 and box.x1 <= area.x1 and box.y0 >= area.y0
            and box.y1 <= area.y1)


def push_inside(label, box, area, renderer):
    """Shift `label` (its offset, keeping its alignment) by the least that brings its box
    inside `area`, or against the area's left or bottom edge if it is larger still.
    Returns the new box."""
    from matplotlib.text import Text

    dx = max(area.x0 - box.x0, min(0.0, area.x1 - box.x1))
    dy = max(area.y0 - box.y0, min(0.0, area.y1 - box.y1))
    points_per_pixel = 72 / label.figure.dpi
    x, y = label.get_position()
    label.set_position((x + dx * points_per_pixel, y + dy * points_per_pixel))
    label.update_positions(renderer)
    return Text.get_window_extent(label, renderer)


def label_box(label, offset: tuple[int, int], renderer):
    """Move `label` to `offset` (points from its marker; text to the left for a negative
    dx) and return its text's box on the canvas (without the leader line)."""
    from matplotlib.text import Text

    label.set_position(offset)
    label.set_horizontalalignment("left" if offset[0] > 0 else "right")
    label.update_positions(renderer)  # what Annotation.get_window_extent does first
    return Text.get_window_extent(label, renderer)


if __name__ == "__main__":
    sys.exit(run_stage(main))
