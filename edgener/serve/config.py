"""The server's settings: `edge-ner serve`'s options."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeConfig:
    threads: int | None = None  # ONNX Runtime's threads for the model; None: all cores
    max_batch_tokens: int = 512  # padded tokens per model call (the runtime's budget)
    max_wait_ms: float = 5.0  # how long a request may wait for others; 0: no coalescing
    max_queue: int = 256  # requests waiting for the model; more are refused (503)
    max_text_chars: int = 100_000  # one text; longer ones are refused (413)
    max_texts: int = 256  # texts in one request
    max_body_bytes: int = 1_000_000
    timeout_s: float = 30.0  # a request not answered by then gets 504
    # ONNX Runtime's worker threads spin between operators by default: fastest on idle
    # cores, but here they share the cores with the event loop that parses the requests.
    spinning: bool = False
    warmup_texts: tuple[str, ...] = ("EU rejects German call to boycott British lamb .",) * 4
    # Every route but /healthz needs `Authorization: Bearer <api_key>` (None: open). Never
    # shown: not in repr, not in any log line.
    api_key: str | None = field(default=None, repr=False)
    metrics_need_key: bool = True  # False: /metrics open to scrapers inside the network
