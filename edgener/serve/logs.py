"""Server logging that never blocks the event loop.

A log line written straight to stderr from the event loop blocks the whole server once
stderr stops draining: a pipe nobody reads, a slow journald, a container log driver under
back-pressure, a terminal paused with Ctrl-S. Every request, /healthz included, then
waits behind that one write, and SIGTERM cannot stop it. So a log record is formatted where
it is made and handed to a bounded queue (`QueueHandler.enqueue` never waits: a full
queue drops the line and counts it); one background thread writes the queue to the
stream. That writer waits for the stream to take more with a timeout and never holds a
lock while it waits, so the server still shuts down, and exits, while stderr is stalled.
(The standard QueueListener would write through a StreamHandler, whose lock logging's
exit hook takes to flush it: the process would hang at exit behind the stalled write.)
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import sys
import threading
import time
from collections.abc import Callable
from logging.handlers import QueueHandler
from typing import IO

# Lines waiting for the writer: a burst of a second or two of requests at full load on a
# small box, while the sink catches up; beyond that a stalled sink loses lines, not time.
QUEUE_LINES = 1000
# How long the writer waits for the stream at a time, so it sees a stop within that.
POLL_SECONDS = 0.1
# Linux pipes take a write of up to a page without blocking once select says writable.
WRITE_CHUNK = 4096
# The loggers that write while the server runs: ours, and uvicorn's warnings and errors.
SERVER_LOGGERS = ("edgener.serve", "uvicorn", "uvicorn.error")


class LogFormatter(logging.Formatter):
    """A request's line as plain words or, with --log-json, one JSON object."""

    def __init__(self, as_json: bool):
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: getattr(record, key) for key in ("method", "path", "status", "texts",
                                                        "ms") if hasattr(record, key)}
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        if self.as_json:
            return json.dumps({"time": when, "level": record.levelname.lower(),
                               **(fields or {"message": record.getMessage()})})
        if fields:
            texts = "" if fields["texts"] is None else f" {fields['texts']} texts"
            return (f"{when} {fields['method']} {fields['path']} {fields['status']}{texts} "
                    f"{fields['ms']} ms")
        return f"{when} {record.levelname.lower()}: {record.getMessage()}"


class DroppingQueueHandler(QueueHandler):
    """Formats a record where it is made, and puts the line on the queue if there is room;
    otherwise drops it and calls `on_drop`."""

    def __init__(self, lines: queue.Queue, on_drop: Callable[[], None]):
        super().__init__(lines)
        self.on_drop = on_drop

    def prepare(self, record: logging.LogRecord) -> str:
        return self.format(record)

    def enqueue(self, line: str) -> None:
        try:
            self.queue.put_nowait(line)
        except queue.Full:
            self.on_drop()


class LogWriter:
    """The thread that writes queued lines to a stream's file descriptor, as fast as the
    stream takes them and never blocked on it for longer than POLL_SECONDS at a time."""

    def __init__(self, lines: queue.Queue, stream: IO[str]):
        self.lines, self.stream = lines, stream
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="log-writer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # no descriptor (a test's StringIO)
            fd = None
        while not self.stopping.is_set():
            try:
                line = self.lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            data = (line + "\n").encode("utf-8", "replace")
            if fd is None:
                self.stream.write(data.decode("utf-8"))
                self.stream.flush()
            else:
                self.write(fd, data)

    def write(self, fd: int, data: bytes) -> None:
        """All of `data`, unless the writer is stopped while the stream is stalled."""
        while data and not self.stopping.is_set():
            try:
                ready = select.select([], [fd], [], POLL_SECONDS)[1]
            except (OSError, ValueError):  # not selectable: write and hope it drains
                ready = [fd]
            if ready:
                try:
                    data = data[os.write(fd, data[:WRITE_CHUNK]):]
                except BlockingIOError:
                    continue
                except OSError:  # the reader is gone (EPIPE): nobody to log to
                    return

    def stop(self, timeout: float) -> None:
        """Let the writer write what is queued for up to `timeout` seconds, then stop it:
        lines a stalled stream did not take by then are lost, not waited for."""
        deadline = time.monotonic() + timeout
        while not self.lines.empty() and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS / 10)
        self.stopping.set()
        self.thread.join(POLL_SECONDS * 5)


def start_logging(as_json: bool, on_drop: Callable[[], None],
                  stream: IO[str] | None = None) -> LogWriter:
    """Route the server's loggers through a bounded queue to a writer thread on `stream`
    (stderr); returns the running writer, to stop at shutdown."""
    lines: queue.Queue = queue.Queue(QUEUE_LINES)
    handler = DroppingQueueHandler(lines, on_drop)
    handler.setFormatter(LogFormatter(as_json))
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    logging.getLogger("edgener.serve").setLevel(logging.INFO)
    for name in SERVER_LOGGERS[1:]:
        logging.getLogger(name).setLevel(logging.WARNING)
    writer = LogWriter(lines, stream or sys.stderr)
    writer.start()
    return writer
