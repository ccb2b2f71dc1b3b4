"""The engines that run a labelling job's pending shards: this process, or Ray Data.

Both run `label_shard` on each shard, so they write the same files. Ray Data brings what a
corpus larger than one machine needs: an actor pool across a cluster's nodes, each actor
loading the artifact once with the CPUs Ray gave it, and a shard whose actor died run again
on a new one. What it does not bring, and the job adds: output files that appear whole or
not at all, and a rerun that tags only the shards not yet written.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from edgener.labelling.job import Job, Shard, label_shard
from edgener.runtime.errors import UserError, needs_extra

if TYPE_CHECKING:
    import numpy as np

Advance = Callable[[int], None]


def run_local(job: Job, shards: list[Shard], threads: int | None, max_batch_tokens: int,
              advance: Advance) -> None:
    from edgener.predictor import load_predictor

    predictor = load_predictor(job.artifact, threads, max_batch_tokens)
    for shard in shards:
        advance(label_shard(predictor, job, shard))


def shard_labeller(job: Job, threads: int, max_batch_tokens: int) -> type:
    """The class of Ray Data's actors, with the job built in: constructor arguments would
    live in the object store, where a restarted actor could find them gone."""
    settings = asdict(job)

    class ShardLabeller:
        """The artifact loaded once an actor, ONNX Runtime given exactly the CPUs Ray
        reserved for it (its default is every core of the node: two actors on two cores
        would each run two threads)."""

        def __init__(self):
            from edgener.predictor import load_predictor

            self.job = Job(**settings)
            self.predictor = load_predictor(self.job.artifact, threads, max_batch_tokens)

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
            rows, errors = [], []
            for text in batch["shard"]:
                try:  # bad input is the user's to fix, not a failure for Ray to retry
                    shard = Shard.from_dict(json.loads(text))
                    rows.append(label_shard(self.predictor, self.job, shard))
                    errors.append("")
                except UserError as error:
                    rows.append(0)
                    errors.append(str(error))
            return {"rows": rows, "error": errors}

    return ShardLabeller


def run_ray(job: Job, shards: list[Shard], workers: int | None, threads: int,
            address: str | None, max_batch_tokens: int, advance: Advance) -> None:
    """`workers` None: as many as the cluster's CPUs hold (this machine's, when local)."""
    quiet_ray()
    with needs_extra("--engine ray"):
        import ray

    start_ray(address, (workers or max(1, (os.cpu_count() or 1) // threads)) * threads)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", threads)) // threads)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command draws its own, in rows
    context.print_on_execution_start = False
    specs = ray.data.from_items([{"shard": json.dumps(asdict(s))} for s in shards],
                                override_num_blocks=len(shards))
    # Ray Data restarts an actor that dies (killed, out of memory, its node lost) and runs
    # its shard again; the shard's file is written whole or not at all, so never twice.
    done = specs.map_batches(shard_labeller(job, threads, max_batch_tokens), batch_size=1,
                             compute=ray.data.ActorPoolStrategy(size=workers),
                             num_cpus=threads)
    for batch in done.iter_batches(batch_size=None, batch_format="pyarrow"):
        for rows, error in zip(batch.column("rows").to_pylist(),
                               batch.column("error").to_pylist(), strict=True):
            if error:
                raise UserError(error)
            advance(rows)


def quiet_ray() -> None:
    """Ray's own notices and its C++ core's log lines would bury the command's progress;
    set RAY_BACKEND_LOG_LEVEL=info and RAY_DATA_LOG_LEVEL=INFO to read them."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    logging.getLogger("ray").setLevel(logging.ERROR)


def start_ray(address: str | None, cpus: int) -> None:
    import ray

    if address is None:  # a local instance, with the CPUs the actors will take
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
    else:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError) as error:
            raise UserError(f"cannot join the Ray cluster at {address}: {error}") from None
