"""Rows/s of `edge-ner label` on a large corpus: one process against Ray Data, in rounds
(A B C, then C B A, so the VM's drift falls on all alike), start-up apart; then a driver
killed half way and the command run again.

    python -m bench.labelling runs/conll2003/quantized/L3-ort-int8-dynamic --rows 200000

The corpus is the CoNLL-2003 sentences (train, valid, test) as text, a sentence a line,
repeated to --rows lines. Every run's output is compared with the first one's, file by file.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.table import Table

from edgener.runtime.conll import read_conll
from edgener.runtime.console import console

SUMMARY = re.compile(r"labelled ([\d,]+) rows into \d+ files? under .* in ([\d.]+) s: "
                     r"([\d,]+) rows/s after the first file, written ([\d.]+) s in")
CONFIGS = {  # name -> extra arguments
    "local, 2 threads": ["--threads", "2"],
    "ray, 2 workers x 1 thread": ["--engine", "ray", "--workers", "2", "--threads", "1"],
    "ray, 1 worker x 2 threads": ["--engine", "ray", "--workers", "1", "--threads", "2"],
}


def corpus(data: Path, rows: int, path: Path) -> int:
    sentences = [" ".join(s.words) for split in ("train", "valid", "test")
                 for s in read_conll(data / f"{split}.txt")]
    with open(path, "w", encoding="utf-8") as out:
        for index in range(rows):
            out.write(sentences[index % len(sentences)] + "\n")
    return len(sentences)


class PeakMemory:
    """The largest resident set of each process whose command line holds `mark` (or the
    one `pid`), sampled every 0.2 s."""

    def __init__(self, mark: str | None = None, pid: int | None = None):
        self.mark, self.pid, self.peaks = mark, pid, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while not self.stop.wait(0.2):
            listing = subprocess.run(["ps", "-eo", "pid=,rss=,args="], capture_output=True,
                                     text=True).stdout
            for line in listing.splitlines():
                pid, rss, args = line.split(None, 2)
                if (self.pid is not None and int(pid) == self.pid) or \
                        (self.mark is not None and self.mark in args):
                    self.peaks[pid] = max(self.peaks.get(pid, 0), int(rss) / 1024)

    def close(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        return self.peaks


def label(artifact: str, source: Path, out: Path, extra: list[str], shard_rows: int
          ) -> tuple[subprocess.Popen, Path]:
    log = out.with_suffix(".log")
    command = [str(Path(sys.executable).parent / "edge-ner"), "label", artifact, str(source),
               "--output", str(out), "--shard-rows", str(shard_rows), *extra]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT), log


def timed_run(artifact: str, source: Path, out: Path, extra: list[str], shard_rows: int
              ) -> dict:
    process, log = label(artifact, source, out, extra, shard_rows)
    memory = PeakMemory("ShardLabeller") if "ray" in extra else PeakMemory(pid=process.pid)
    code = process.wait()
    peaks = memory.close()
    text = log.read_text(encoding="utf-8")
    found = SUMMARY.search(text)
    if code or not found:
        raise SystemExit(f"{' '.join(extra)} failed:\n{text}")
    rows, seconds, rate, first = found.groups()
    return {"rows": int(rows.replace(",", "")), "seconds": float(seconds),
            "rate": float(rate.replace(",", "")), "startup": float(first),
            "peak_mb": max(peaks.values(), default=0.0)}


def same_output(out: Path, reference: Path) -> bool:
    names = sorted(p.name for p in reference.glob("part-*"))
    return sorted(p.name for p in out.glob("part-*")) == names and all(
        (out / n).read_bytes() == (reference / n).read_bytes() for n in names)


def killed_and_rerun(artifact: str, source: Path, out: Path, shards: int, shard_rows: int,
                     reference: Path) -> dict:
    extra = CONFIGS["ray, 2 workers x 1 thread"]
    process, log = label(artifact, source, out, extra, shard_rows)
    while len(list(out.glob("part-*"))) < shards // 2:
        if process.poll() is not None:
            raise SystemExit(log.read_text(encoding="utf-8"))
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(3)
    written = len(list(out.glob("part-*")))
    rerun = timed_run(artifact, source, out, extra, shard_rows)
    return {"written_before": written, "rerun_rows": rerun["rows"],
            "identical": same_output(out, reference)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.labelling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--data", default=os.path.join(
        os.environ.get("EDGE_NER_DATA_DIR", "../shared/data"), "conll2003"))
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-ner-labelling-") as work:
        work = Path(work)
        source = work / "corpus.txt"
        distinct = corpus(Path(args.data), args.rows, source)
        console.print(f"{args.rows:,} rows ({distinct:,} distinct CoNLL-2003 sentences), "
                      f"shards of {args.shard_rows:,}")
        order = [*CONFIGS, *reversed(CONFIGS)]
        results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        reference = None
        for turn, name in enumerate(order):
            out = work / f"out{turn}"
            results[name].append(timed_run(args.artifact, source, out, CONFIGS[name],
                                           args.shard_rows))
            if reference is None:
                reference = out
            elif not same_output(out, reference):
                raise SystemExit(f"{name}: output differs from {order[0]}'s")
            console.print(f"{name}: {results[name][-1]}")
        base = sum(r["rate"] for r in results[order[0]]) / 2
        table = Table("engine", "rows/s (2 rounds)", "vs local", "start-up s", "peak MB a worker")
        for name, runs in results.items():
            rate = sum(r["rate"] for r in runs) / len(runs)
            table.add_row(name, " / ".join(f"{r['rate']:,.0f}" for r in runs),
                          f"{rate / base:.2f}x", " / ".join(f"{r['startup']:.1f}" for r in runs),
                          f"{max(r['peak_mb'] for r in runs):,.0f}")
        console.print(table)
        shards = -(-args.rows // args.shard_rows)
        crash = killed_and_rerun(args.artifact, source, work / "killed", shards,
                                 args.shard_rows, reference)
        console.print(f"driver killed with {crash['written_before']} of {shards} shards "
                      f"written; the rerun tagged {crash['rerun_rows']:,} rows; output "
                      f"identical to one process's: {crash['identical']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
