"""The bounded queue in front of the model, and the collector that coalesces what waits in it
into shared model calls, run in the model's own thread, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from edgener.runtime.predictor import Entity, Predictor
from edgener.serve.config import ServeConfig
from edgener.serve.metrics import Metrics
from edgener.serve.requests import ApiError

log = logging.getLogger("edgener.serve")
# English text runs about four characters a subword token: enough to tell when the queued
# texts would fill a model call, so the collector stops waiting for more.
CHARS_PER_TOKEN = 4


@dataclass
class Job:
    texts: list[str]
    future: asyncio.Future
    arrived: float  # the event loop's clock
    document: bool = False  # the texts are parts of one document


def document_ids(jobs: list[Job]) -> list[int]:
    """A document id for each text of the jobs, in order: a request's texts share one where
    they are parts of one document; no two requests ever share one."""
    documents, next_id = [], 0
    for job in jobs:
        for _ in job.texts:
            documents.append(next_id)
            next_id += not job.document
        next_id += job.document
    return documents


class Batcher:
    """The bounded queue in front of the model and the collector that empties it."""

    def __init__(self, predictor: Predictor, config: ServeConfig, metrics: Metrics):
        self.predictor, self.config, self.metrics = predictor, config, metrics
        self.mix = predictor.batch_invariant
        self.queue: deque[Job] = deque()
        self.arrival = asyncio.Event()
        # Requests being read and parsed, not yet queued: the ones worth waiting for.
        self.incoming = 0
        # One model thread: ONNX Runtime parallelises inside a call; two calls at once
        # would only fight over the same cores.
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.collect())

    async def stop(self) -> None:
        """Stop collecting (the server has already answered every request in flight)."""
        if self.task is not None:
            self.task.cancel()
        self.model_thread.shutdown(wait=True)

    @contextlib.contextmanager
    def reading(self):
        """Around reading and parsing a request: the collector waits for such requests,
        and is woken when one is queued or refused."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1
            self.arrival.set()

    def submit(self, texts: list[str], document: bool = False) -> asyncio.Future:
        if len(self.queue) >= self.config.max_queue:
            raise ApiError(503, f"the server is busy: {len(self.queue)} requests are waiting "
                                "for the model; retry shortly", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        job = Job(texts, loop.create_future(), loop.time(), document)
        self.queue.append(job)
        self.metrics.queue_depth.set(len(self.queue))
        self.arrival.set()
        return job.future

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self.arrival.clear()
                await self.arrival.wait()
            jobs = await self.gather(loop)
            self.metrics.queue_depth.set(len(self.queue))
            # A request past its deadline has been answered 504 and its future cancelled.
            live = [job for job in jobs if not job.future.done()]
            if live:
                await self.run(loop, live)

    async def gather(self, loop: asyncio.AbstractEventLoop) -> list[Job]:
        """The oldest waiting request and all that join it within max_wait_ms of its
        arrival, stopping early once their texts would fill a model call or no other
        request is on its way (so a lone request never waits)."""
        wait = self.config.max_wait_ms / 1000
        if wait <= 0:
            return [self.queue.popleft()]
        budget_chars = self.config.max_batch_tokens * CHARS_PER_TOKEN
        until = self.queue[0].arrived + wait

        def queued_chars() -> int:  # [CLS] and [SEP] count too
            return sum(len(t) + 2 * CHARS_PER_TOKEN for job in self.queue for t in job.texts)

        while self.incoming and loop.time() < until and queued_chars() < budget_chars:
            self.arrival.clear()
            try:
                await asyncio.wait_for(self.arrival.wait(), until - loop.time())
            except asyncio.TimeoutError:
                break
        jobs = list(self.queue)
        self.queue.clear()
        return jobs

    async def run(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> None:
        """The jobs' texts in one model call, or, for an artifact not known to be
        batch-invariant, each job's in a call of its own (no text beside a stranger's)."""
        for group in [jobs] if self.mix else [[job] for job in jobs]:
            await self.call(loop, group)

    async def call(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        documents = document_ids(jobs)
        tick = time.perf_counter()
        try:
            results, tokens, unknown = await loop.run_in_executor(
                self.model_thread, self.predict, texts, documents)
        except Exception as error:  # the model failed: these requests fail, the server goes on
            log.exception("model call failed")
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(ApiError(500, f"the model call failed: {message}"))
            return
        finally:
            self.metrics.model_seconds.observe(time.perf_counter() - tick)
            self.metrics.batch_requests.observe(len(jobs))
            self.metrics.batch_texts.observe(len(texts))
        self.metrics.count_tokens(tokens, unknown)
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(results[start:start + len(job.texts)])
            start += len(job.texts)

    def predict(self, texts: list[str], documents: list[int]
                ) -> tuple[list[list[Entity]], int, int]:
        """In the model thread: the texts' entities, with the subword tokens they made and
        how many of those the vocabulary does not know."""
        encoder = self.predictor.encoder
        tokens, unknown = encoder.tokens_encoded, encoder.unknown_encoded
        results = self.predictor.predict_batch(texts, documents)
        return (results, encoder.tokens_encoded - tokens,
                encoder.unknown_encoded - unknown)
