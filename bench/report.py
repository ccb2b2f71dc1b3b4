"""Measure every artifact of a run beside what users would otherwise run, on this machine,
and publish runs/<run>/report/ (report.md, report.json, report.png).

    python -m bench.report [--preset default|FILE.yaml] [--quick] [key=value ...]

Rows: the teacher in Hugging Face PyTorch eager FP32 (the default a user runs, and the
reference of every ratio), the distilled students, every quantized artifact, and two more
peers built from the teacher: PyTorch dynamic INT8 (torch.ao) and ONNX Runtime dynamic
INT8 of the unfused export (what a default Optimum quantization gives). Each row is
measured in a fresh process, one after another, at a fixed thread count.

Ratios are paired: in every row's process, its latency rounds alternate with the ORT peer's
(cheap to time, so it anchors every row), and a speedup is the median over rounds of the
two p50s' ratio; the speedup over the eager teacher is the row's over the peer divided by
the teacher's over the peer. On a shared machine whose speed drifts by tens of percent
within minutes, ratios between rows timed minutes apart would carry that drift.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.config import ReportConfig
from bench.measure import (
    ARTIFACT,
    ORT_DYNAMIC_INT8,
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
from edgener.artifacts import MANIFEST, publish_dir, read_json, read_manifest, write_json_atomic
from edgener.cli import print_wide, quiet_libraries, run_cli
from edgener.config import as_dict, load_config, parse_overrides, preset_path
from edgener.data import load_dataset, recorded_dataset
from edgener.training import console

EAGER = "teacher"  # the row every speedup is relative to
ORT_PEER = f"{EAGER}-{ORT_DYNAMIC_INT8}-unfused"  # the peer every row is timed beside
TARGETS = {"speedup_vs_eager": 8.0, "max_f1_drop_points": 1.5, "speedup_vs_ort_peer": 2.5,
           "max_floor_ratio": 3.0, "max_wall_minutes": 15.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", help="preset under configs/report")
    parser.add_argument("--quick", action="store_true", help="fewer sentences")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    config = load_config(ReportConfig, preset_path("report", args.preset),
                         parse_overrides(args.overrides), args.quick)
    # ONNX Runtime's quantizer logs advice on the root logger at every call.
    logging.getLogger().setLevel(logging.ERROR)
    command = "python -m bench.report " + " ".join(argv if argv is not None else sys.argv[1:])
    return report(config, command.strip())


def report(config: ReportConfig, command: str) -> int:
    started = time.time()
    run_dir = Path(config.runs_dir) / config.run
    teacher = read_manifest(run_dir / "teacher", "teacher", "make teacher")
    dataset = load_dataset(config.dataset or recorded_dataset(teacher), config.data_dir)
    test = dataset.split("test")[: config.test_limit]
    candidates = find_candidates(run_dir, config)
    console.print(f"[bold]report[/]: {len(candidates)} rows from {run_dir}; F1 on {len(test)} "
                  f"test sentences; {config.threads} threads")

    with console.status("measuring matrix throughput"):
        gemm = isolated(gemm_gflops, config.threads)
    console.print(f"matrix throughput: FP32 {gemm['fp32']:.0f} GFLOP/s, "
                  f"INT8 {gemm['int8']:.0f} GOP/s")
    settings = Settings(config.threads, config.eval_batch_size, config.warmup,
                        config.latency_rounds, config.throughput_batch, gemm)
    words, tags = [s.words for s in test], [s.tags for s in test]
    latency_texts = sentence_texts(
        [words[i] for i in evenly_spaced(config.latency_sentences, len(words))])
    throughput_texts = sentence_texts(
        [words[i % len(words)] for i in range(config.throughput_sentences)])

    anchor = next((c for c in candidates if c.kind == ORT_DYNAMIC_INT8), None)
    rows, failed = [], []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("measuring", total=len(candidates))
        # The anchor first: every other row loads it, so if it cannot be measured, the
        # rest are timed without it rather than all failing.
        for candidate in sorted(candidates, key=lambda c: c is not anchor):
            progress.update(task, description=f"measuring {candidate.name}")
            tick = time.time()
            try:
                row = isolated(measure, candidate, settings, words, tags, latency_texts,
                               throughput_texts, None if candidate is anchor else anchor)
            except Exception as error:  # one broken artifact must not sink the report
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
                progress.console.print(f"[red]{candidate.name} failed[/]: {message}")
                failed.append({"name": candidate.name, "error": message})
                if candidate is anchor:
                    anchor = None
            else:
                rows.append(row | {"source": candidate.source,
                                   "measure_s": round(time.time() - tick, 1)})
            progress.advance(task)

    order = [c.name for c in candidates]
    rows.sort(key=lambda r: order.index(r["name"]))
    add_ratios(rows, anchor.name if anchor else None)
    frontier = pareto_front([(r["name"], r["p50_ms"], r["test_f1"]) for r in rows])
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
        "pareto": frontier,
        "anchored": anchor is not None,
        "wall_s": round(wall, 1),
    }
    result["checks"] = target_checks(rows, wall)
    out = run_dir / "report"
    with publish_dir(out) as staging:
        write_json_atomic(staging / "report.json", result)
        (staging / "report.md").write_text(markdown(result), encoding="utf-8")
        plot(rows, frontier, staging / "report.png")
    print_table(result)
    console.print(f"report in [bold]{out}[/] ({wall / 60:.1f} min)")
    return 0


def isolated(function, *args):
    """function(*args) in a fresh process: each artifact's memory peak is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet_child) as pool:
        return pool.submit(function, *args).result()


def _quiet_child() -> None:
    quiet_libraries()
    logging.getLogger().setLevel(logging.ERROR)


def find_candidates(run_dir: Path, config: ReportConfig) -> list[Candidate]:
    """The teacher and its peers, the students, then every quantized artifact."""
    teacher = run_dir / "teacher"
    rows = [Candidate(EAGER, ARTIFACT, teacher, "pytorch", "fp32", True, teacher,
                      weights_mb(teacher), EAGER)]
    if config.peers:
        rows += peers(run_dir, teacher)
    students = run_dir / "students"
    for folder in sorted(students.glob("*")) if students.is_dir() else []:
        if (folder / MANIFEST).is_file() and (config.baselines or
                                              not folder.name.endswith("-baseline")):
            rows.append(Candidate(folder.name, ARTIFACT, folder, "pytorch", "fp32", False,
                                  folder, weights_mb(folder), folder.name))
    quantized = run_dir / "quantized"
    for folder in sorted(quantized.glob("*")) if quantized.is_dir() else []:
        if not (folder / MANIFEST).is_file():
            continue
        manifest = read_json(folder / MANIFEST)
        source = manifest["source_name"]
        if source.endswith("-baseline") and not config.baselines:
            continue
        if manifest["backend"] in ("tensorrt", "torch-tensorrt") and \
                not torch.cuda.is_available():
            console.print(f"[yellow]skipping {folder.name}[/]: a TensorRT engine, and this "
                          "machine has no CUDA device")
            continue
        rows.append(Candidate(folder.name, ARTIFACT, folder, manifest["backend"],
                              manifest["precision"], False, source_model_folder(run_dir, source),
                              manifest["size_mb"], source))
    if config.artifacts is not None:
        # Ratios need the eager teacher and the peer that anchors them.
        wanted = set(config.artifacts) | {EAGER, ORT_PEER}
        rows = [row for row in rows if row.name in wanted]
    return rows


def peers(run_dir: Path, teacher: Path) -> list[Candidate]:
    found = [Candidate(f"{EAGER}-{TORCH_DYNAMIC_INT8}", TORCH_DYNAMIC_INT8, teacher,
                       "pytorch", "int8", True, teacher,
                       round(state_dict_mb(torch_dynamic_int8(teacher)), 2), EAGER)]
    exported = run_dir / "quantized" / f"{EAGER}-onnx-fp32" / "model.onnx"
    if not exported.is_file():
        console.print(f"[yellow]skipping the ONNX Runtime dynamic INT8 peer[/]: {exported} is "
                      "missing (make quantize exports it)")
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


def add_ratios(rows: list[dict], anchor: str | None) -> None:
    """Speedups against the eager teacher and the ORT peer, F1 change against the teacher,
    distance to the floor. Rows timed beside the anchor use the paired ratios (see the
    module notes); without an anchor, ratios are of p50s measured in different processes."""
    eager = next((r for r in rows if r["name"] == EAGER), None)
    peer = next((r for r in rows if r["name"] == anchor), None)
    for row in rows:
        row["speedup_vs_peer"] = paired_ratio(row, anchor) or (
            peer["p50_ms"] / row["p50_ms"] if peer else None)
    for row in rows:
        if eager is None:
            row["speedup_vs_eager"] = None
        elif row["speedup_vs_peer"] is not None and eager["speedup_vs_peer"] is not None:
            row["speedup_vs_eager"] = row["speedup_vs_peer"] / eager["speedup_vs_peer"]
        else:
            row["speedup_vs_eager"] = eager["p50_ms"] / row["p50_ms"]
        row["f1_change_vs_teacher"] = row["test_f1"] - eager["test_f1"] if eager else None
        row["floor_ratio"] = row["p50_ms"] / row["floor_ms"] if row["floor_ms"] else None


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


def best_int8_student(rows: list[dict]) -> dict | None:
    """The fastest INT8 artifact of a student whose test F1 is within the F1 target."""
    teacher = next((r for r in rows if r["name"] == EAGER), None)
    if teacher is None:
        return None
    limit = teacher["test_f1"] - TARGETS["max_f1_drop_points"] / 100
    eligible = [r for r in rows if r["precision"] == "int8" and not r["is_peer"]
                and r["source"] != EAGER and r["test_f1"] >= limit]
    return min(eligible, key=lambda r: r["p50_ms"], default=None)


def target_checks(rows: list[dict], wall_s: float) -> list[dict]:
    checks = []
    best = best_int8_student(rows)
    checks.append({
        "target": f"best INT8 student >= {TARGETS['speedup_vs_eager']:g}x faster than the "
                  f"teacher's eager FP32 at batch-1 p50, F1 within "
                  f"{TARGETS['max_f1_drop_points']:g} points",
        "artifact": best["name"] if best else None,
        "value": best["speedup_vs_eager"] if best else None,
        "met": bool(best) and best["speedup_vs_eager"] >= TARGETS["speedup_vs_eager"]})
    ratio = best["speedup_vs_peer"] if best else None
    checks.append({
        "target": f"the same artifact >= {TARGETS['speedup_vs_ort_peer']:g}x faster than the "
                  "teacher's ONNX Runtime dynamic INT8 peer",
        "artifact": best["name"] if best else None, "value": ratio,
        "met": ratio is not None and ratio >= TARGETS["speedup_vs_ort_peer"]})
    cpu = [r for r in rows if not r["is_peer"] and r["floor_ratio"] is not None]
    worst = max(cpu, key=lambda r: r["floor_ratio"], default=None)
    checks.append({
        "target": f"every CPU artifact's batch-1 p50 within {TARGETS['max_floor_ratio']:g}x "
                  "of its compute floor",
        "artifact": worst["name"] if worst else None,
        "value": worst["floor_ratio"] if worst else None,
        "met": bool(cpu) and worst["floor_ratio"] <= TARGETS["max_floor_ratio"],
        "over": [r["name"] for r in cpu if r["floor_ratio"] > TARGETS["max_floor_ratio"]]})
    checks.append({
        "target": f"the report completes in under {TARGETS['max_wall_minutes']:g} minutes",
        "value": wall_s / 60, "met": wall_s / 60 < TARGETS["max_wall_minutes"]})
    return checks


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


COLUMNS = ("artifact", "backend", "prec.", "test F1", "p50 ms", "± ms", "p90 ms", "p99 ms",
           "sent/s", "MB", "RSS MB", "floor ms", "x floor", "x eager", "x peer")


def cells(row: dict) -> list[str]:
    def number(value, fmt):
        return "–" if value is None else format(value, fmt)

    return [row["name"] + (" (peer)" if row["is_peer"] else ""), row["backend"],
            row["precision"], f"{100 * row['test_f1']:.2f}", f"{row['p50_ms']:.2f}",
            f"{row['p50_spread_ms']:.2f}", f"{row['p90_ms']:.2f}", f"{row['p99_ms']:.2f}",
            f"{row['throughput_sps']:.0f}", f"{row['size_mb']:.1f}",
            f"{row['peak_rss_mb']:.0f}", number(row["floor_ms"], ".2f"),
            number(row["floor_ratio"], ".1f"), number(row["speedup_vs_eager"], ".2f") + "x",
            number(row["speedup_vs_peer"], ".2f") + "x"]


def print_table(result: dict) -> None:
    table = Table(title=f"Latency against F1, {result['threads']} threads "
                        f"(★ Pareto frontier; speedups against the eager teacher and the "
                        f"ORT peer)")
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index < 3 else "right", no_wrap=index == 0)
    for row in result["rows"]:
        style = "dim" if row["is_peer"] else ("bold" if row["name"] in result["pareto"] else "")
        values = cells(row)
        if row["name"] in result["pareto"]:
            values[0] = "★ " + values[0]
        table.add_row(*values, style=style)
    print_wide(table, 190)  # fifteen columns
    for failure in result["failed"]:
        console.print(f"[red]not measured[/]: {failure['name']}: {failure['error']}")
    for check in result["checks"]:
        mark = "[green]met[/]" if check["met"] else "[red]missed[/]"
        value = "–" if check["value"] is None else f"{check['value']:.2f}"
        console.print(f"{mark}  {check['target']}: {value}"
                      + (f" ({check['artifact']})" if check.get("artifact") else ""))


def markdown(result: dict) -> str:
    gemm = result["gemm_gflops"]
    lines = [
        "# edge-ner report",
        "",
        f"- date: {result['date']}",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}; {result['threads']} threads",
        f"- matrix throughput (same run): FP32 {gemm['fp32']:.0f} GFLOP/s (PyTorch GEMM), "
        f"INT8 {gemm['int8']:.0f} GOP/s (ONNX Runtime MatMulInteger)",
        f"- test F1 on {result['test_sentences']} sentences; latency: text in, entities out, "
        f"batch 1, {result['settings']['latency_sentences']} test sentences x "
        f"{result['settings']['latency_rounds']} rounds after "
        f"{result['settings']['warmup']} warm-up calls (± is the spread of p50 across "
        f"rounds); throughput at batch {result['settings']['throughput_batch']}",
        "- floor: FLOPs of each sentence from the model's shape over the matrix throughput "
        "of its precision",
        f"- x eager, x peer: speedup against `{EAGER}` (Hugging Face PyTorch eager FP32) and "
        f"against the teacher's ONNX Runtime dynamic INT8 (unfused); "
        + ("paired: each row's latency rounds alternate with the peer's in the row's own "
           "process, a ratio is the median over rounds, and x eager is the row's x peer over "
           "the teacher's" if result["anchored"] else
           "ratios of p50s measured in separate processes"),
        f"- wall time: {result['wall_s'] / 60:.1f} min",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(COLUMNS) - 3)) + "|",
    ]
    for row in result["rows"]:
        values = cells(row)
        if row["name"] in result["pareto"]:
            values[0] = f"**{values[0]}** ★"
        lines.append("| " + " | ".join(values) + " |")
    lines += ["", "★: on the Pareto frontier of latency against F1.", ""]
    for failure in result["failed"]:
        lines.append(f"- not measured: {failure['name']}: {failure['error']}")
    lines += ["## Targets", "", "| target | artifact | value | met |", "|---|---|---:|---|"]
    for check in result["checks"]:
        value = "–" if check["value"] is None else f"{check['value']:.2f}"
        lines.append(f"| {check['target']} | {check.get('artifact') or ''} | {value} | "
                     f"{'yes' if check['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], frontier: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 6.5))
    for row in rows:
        marker, colour = ("s", "tab:grey") if row["is_peer"] else (
            ("o", "tab:blue") if row["precision"] == "int8" else ("^", "tab:orange"))
        axes.scatter(row["p50_ms"], 100 * row["test_f1"], marker=marker, color=colour,
                     edgecolors="black" if row["name"] in frontier else "none", s=60, zorder=3)
    front = [r for name in frontier for r in rows if r["name"] == name]
    axes.plot([r["p50_ms"] for r in front], [100 * r["test_f1"] for r in front], "--",
              color="tab:green", label="Pareto frontier", zorder=2)
    axes.set_xscale("log")
    for marker, colour, label in (("^", "tab:orange", "FP32"), ("o", "tab:blue", "INT8"),
                                  ("s", "tab:grey", "peer (from the teacher)")):
        axes.scatter([], [], marker=marker, color=colour, label=label)
    axes.set_xlabel("batch-1 latency p50, ms (text in, entities out; log scale)")
    axes.set_ylabel("test entity F1, %")
    axes.set_title("Latency against F1")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, frameon=False)
    figure.tight_layout()
    # After the layout: placing labels works in pixels, which the layout would move.
    place_labels(axes, [(r["name"], r["p50_ms"], 100 * r["test_f1"]) for r in rows])
    figure.savefig(path, dpi=120)
    plt.close(figure)


# Where a point's label may go, in points from the marker, tried in order.
LABEL_OFFSETS = [(5, 3), (5, -10), (-5, 3), (-5, -10), (5, 12), (5, -19), (-5, 12),
                 (-5, -19), (5, 21), (5, -28), (-5, 21), (-5, -28)]
NEAR_OFFSETS = 4  # the first places touch the marker; from the fifth a line is drawn
MARKER_RADIUS_PT = 4  # the scatter's s=60 (area in pt^2) is a marker about 8 pt across


def place_labels(axes, points: list[tuple[str, float, float]]) -> list:
    """Label each (name, x, y) beside its marker at the first offset where the label
    covers no other label and no marker: rows of one model sit close together, and a
    label drawn over another label or point cannot be read. Where no offset is clear of
    both, the first clear of labels; else the first offset. Returns the annotations."""
    from matplotlib.transforms import Bbox

    renderer = axes.figure.canvas.get_renderer()
    axes.get_xlim()  # settles pending autoscaling, so the pixel positions below are final
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
        clear_of_labels = [offset for offset, box in boxes.items()
                           if not any(box.overlaps(other) for other in placed)]
        clear_of_all = [offset for offset in clear_of_labels
                        if not any(boxes[offset].overlaps(m) for m in markers)]
        chosen = (clear_of_all or clear_of_labels or LABEL_OFFSETS)[0]
        label.arrow_patch.set_visible(chosen not in LABEL_OFFSETS[:NEAR_OFFSETS])
        placed.append(label_box(label, chosen, renderer))
        annotations.append(label)
    return annotations


def label_box(label, offset: tuple[int, int], renderer):
    """Move `label` to `offset` (points from its marker; text to the left for a negative
    dx) and return its text's box on the canvas (without the leader line)."""
    from matplotlib.text import Text

    label.set_position(offset)
    label.set_horizontalalignment("left" if offset[0] > 0 else "right")
    label.update_positions(renderer)  # what Annotation.get_window_extent does first
    return Text.get_window_extent(label, renderer)


if __name__ == "__main__":
    sys.exit(run_cli(main))
