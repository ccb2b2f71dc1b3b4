"""What serving an artifact costs on the box: the install, the cold start, memory and speed,
through the base install (`pip install edge-ner`, built fresh here) beside the full one.

    python -m bench.footprint runs/conll2003/quantized/L3-ort-int8-dynamic [ARTIFACT ...]

For each environment and artifact: the environment's size on disk; cold start, from
process start to the first entities printed by `edge-ner predict` (median of --starts);
the peak resident memory of a process that tags the whole test split; and sentences/s
over the split one at a time and in the runtime's batches. Both environments are measured
in one run, one after the other for each artifact, so they share the machine's state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgener.cli.commands import CHUNK_LINES
from edgener.runtime.console import print_wide, run_cli
from edgener.training.datasets import DATA_DIR_ENV

REPO = Path(__file__).resolve().parent.parent
COLD_TEXT = "EU rejects German call to boycott British lamb ."
# Runs inside each environment's own interpreter: only the runtime it installed.
WORKER = """
import json, sys, time
from bench.measure import peak_rss_mb
from edgener.runtime.conll import read_conll
from edgener.predictor import load_predictor
folder, test_file, threads, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = [" ".join(s.words) for s in read_conll(test_file)]
predictor = load_predictor(folder, threads)
predictor.predict(texts[0])
tick = time.perf_counter()
for text in texts:
    predictor.predict(text)
one = len(texts) / (time.perf_counter() - tick)
tick = time.perf_counter()
for start in range(0, len(texts), chunk):
    predictor.predict_batch(texts[start:start + chunk])
batched = len(texts) / (time.perf_counter() - tick)
# The program's own peak (VmHWM): a forked child's ru_maxrss would also carry its
# parent's memory from before the exec.
print(json.dumps({"sentences": len(texts), "batch1_sps": one, "batched_sps": batched,
                  "peak_rss_mb": peak_rss_mb(), "torch_imported": "torch" in sys.modules}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", help="artifact folders")
    parser.add_argument("--dataset", default="conll2003", help="its test split is tagged")
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV, "../shared/data"))
    parser.add_argument("--base-env", help="a base install to reuse (default: a fresh one in "
                        "a temporary folder, removed after)")
    parser.add_argument("--starts", type=int, default=5, help="cold starts per artifact")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=CHUNK_LINES,
                        help="texts per batched call (default: as `edge-ner label` reads)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    test_file = Path(args.data_dir) / args.dataset / "test.txt"
    if not test_file.is_file():
        raise FileNotFoundError(f"no test split at {test_file} (set --data-dir)")

    with tempfile.TemporaryDirectory(prefix="edge-ner-base-") as scratch:
        base = Path(args.base_env) if args.base_env else Path(scratch) / "venv"
        if not (base / "bin" / "edge-ner").exists():
            print(f"installing the base runtime into {base} ...", file=sys.stderr, flush=True)
            install_base(base)
        envs = {"base install": base, "full install": Path(sys.prefix)}
        rows = []
        for folder in args.artifacts:
            for name, env in envs.items():
                print(f"measuring {folder} in the {name} ...", file=sys.stderr, flush=True)
                rows.append({"artifact": folder, "environment": name,
                             **measure(env, Path(folder), test_file, args)})
    print_rows(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def install_base(env: Path) -> None:
    """`pip install edge-ner` from this checkout, no extras, in a new virtual environment."""
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", str(REPO)],
                   check=True)


def measure(env: Path, folder: Path, test_file: Path, args: argparse.Namespace) -> dict:
    starts = [cold_start(env, folder, args.threads) for _ in range(args.starts)]
    command = [str(env / "bin" / "python"), "-c", WORKER, str(folder), str(test_file),
               str(args.threads), str(args.chunk)]
    return {"env_mb": round(folder_mb(env)), "cold_start_s": statistics.median(starts),
            "cold_starts_s": starts, **run_json(command)}


def cold_start(env: Path, folder: Path, threads: int) -> float:
    """Seconds from spawning `edge-ner predict` to its first line of entities."""
    tick = time.perf_counter()
    process = subprocess.Popen([str(env / "bin" / "edge-ner"), "predict", str(folder),
                                COLD_TEXT, "--threads", str(threads)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    elapsed = time.perf_counter() - tick
    _, error = process.communicate()
    if process.returncode or not first.startswith("{"):
        raise RuntimeError(f"edge-ner predict failed in {env}: {error.strip()[-300:]}")
    return elapsed


def run_json(command: list[str]) -> dict:
    """The JSON the command prints; its failure is an error carrying the end of its stderr."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"the tagging worker failed: {result.stderr.strip()[-300:]}")
    return json.loads(result.stdout)


def folder_mb(folder: Path) -> float:
    """Disk space the folder takes, as du counts it (allocated blocks, links not followed)."""
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*")) / 2**20


def print_rows(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="serving footprint (cold start: median; speeds over the test split)")
    for column in ("artifact", "environment", "env MB", "cold start s", "peak RSS MB",
                   "batch-1 sent/s", "batched sent/s", "torch loaded"):
        table.add_column(column, justify="left" if column in ("artifact", "environment")
                         else "right")
    for row in rows:
        table.add_row(Path(row["artifact"]).name, row["environment"], f"{row['env_mb']:,}",
                      f"{row['cold_start_s']:.2f}", f"{row['peak_rss_mb']:.0f}",
                      f"{row['batch1_sps']:.0f}", f"{row['batched_sps']:.0f}",
                      "yes" if row["torch_imported"] else "no")
    print_wide(table, 120)


if __name__ == "__main__":
    sys.exit(run_cli(main))
