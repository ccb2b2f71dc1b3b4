"""`edge-ner label ARTIFACT INPUT... --output DIR`: files in, a folder of shard files out."""

from __future__ import annotations

import argparse
import sys
import time

from edgener.labelling.engines import run_local, run_ray
from edgener.labelling.job import OUTPUT_FORMATS, Job, pending, prepare
from edgener.runtime.errors import UserError


class RowProgress:
    """Rows tagged, with rows/s, as a bar on stderr when it is a terminal."""

    def __init__(self, total: int, done: int):
        self.bar = None
        self.rows = 0
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress("labelling", BarColumn(), MofNCompleteColumn(),
                                "{task.fields[rate]} rows/s", TimeRemainingColumn(),
                                console=Console(stderr=True))
            self.task = self.bar.add_task("", total=total, completed=done, rate="-")
            self.bar.start()
        self.started = time.perf_counter()
        self.first_done: float | None = None
        self.after_first = 0

    def advance(self, rows: int) -> None:
        self.rows += rows
        if self.first_done is None:
            self.first_done = time.perf_counter()
        else:
            self.after_first += rows
        if self.bar is not None:
            rate = self.rows / max(time.perf_counter() - self.started, 1e-9)
            self.bar.update(self.task, advance=rows, rate=f"{rate:,.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def label_files(args: argparse.Namespace) -> int:
    if args.format not in OUTPUT_FORMATS:
        raise UserError(f"--format {args.format} tags one file; a folder of files is written "
                        "as jsonl or parquet")
    if args.engine == "local" and (args.workers or args.address):
        raise UserError("--workers and --address are for --engine ray")
    job = Job(artifact=args.artifact, inputs=list(args.input), column=args.column,
              output=args.output, output_format=args.format, shard_rows=args.shard_rows)
    started = time.perf_counter()
    shards = prepare(job)
    todo = pending(job, shards)
    total = sum(s.rows for s in shards)
    done = total - sum(s.rows for s in todo)
    if not todo:
        print(f"{job.output} already holds all {len(shards)} shards ({total:,} rows)",
              file=sys.stderr)
        return 0
    if done:
        print(f"resuming: {len(shards) - len(todo)} of {len(shards)} shards ({done:,} rows) "
              "already written", file=sys.stderr)
    progress = RowProgress(total, done)
    try:
        if args.engine == "ray":
            run_ray(job, todo, args.workers, args.threads or 1, args.address,
                    args.max_batch_tokens, progress.advance)
        else:
            run_local(job, todo, args.threads, args.max_batch_tokens, progress.advance)
    finally:
        progress.close()
    ended = time.perf_counter()
    files = f"{len(todo)} file" + ("s" if len(todo) > 1 else "")
    line = (f"labelled {progress.rows:,} rows into {files} under {job.output} in "
            f"{ended - started:.1f} s")
    if progress.after_first:  # the rate once running: start-up is the wait for a first file
        line += (f": {progress.after_first / (ended - progress.first_done):,.0f} rows/s after "
                 f"the first file, written {progress.first_done - started:.1f} s in")
    print(line, file=sys.stderr)
    return 0
