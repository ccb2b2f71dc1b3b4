"""The server's Prometheus series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The Prometheus series of one server (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tokens_seen = self.unknown_seen = 0
        self.requests = Counter("edge_ner_requests", "HTTP requests by path and status",
                                ["path", "status"], registry=self.registry)
        self.request_seconds = Histogram(
            "edge_ner_request_seconds", "Time from a request's arrival to its answer",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=self.registry)
        self.model_seconds = Histogram(
            "edge_ner_model_call_seconds", "Time of one coalesced model call",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 5),
            registry=self.registry)
        self.batch_requests = Histogram(
            "edge_ner_batch_requests", "Requests served by one model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.batch_texts = Histogram("edge_ner_batch_texts", "Texts in one model call",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                                     registry=self.registry)
        self.queue_depth = Gauge("edge_ner_queue_depth", "Requests waiting for the model",
                                 registry=self.registry)
        # A service fed a language or symbols its model cannot read shows it here: the
        # share is unknown_tokens over input_tokens (rate() of both, or since the start).
        self.input_tokens = Counter("edge_ner_input_tokens",
                                    "Subword tokens of the texts the model was given",
                                    registry=self.registry)
        self.unknown_tokens = Counter(
            "edge_ner_unknown_tokens", "Of those, tokens the model's vocabulary does not "
            "know ([UNK])", registry=self.registry)
        self.unknown_share = Gauge(
            "edge_ner_unknown_token_share",
            "Share of input tokens unknown to the vocabulary since the server started",
            registry=self.registry)
        self.log_records_dropped = Counter(
            "edge_ner_log_records_dropped", "Log lines dropped because the log sink (stderr) "
            "did not keep up", registry=self.registry)

    def count_tokens(self, tokens: int, unknown: int) -> None:
        """Add one model call's input tokens and the unknown ones among them."""
        self.input_tokens.inc(tokens)
        self.unknown_tokens.inc(unknown)
        self.tokens_seen += tokens
        self.unknown_seen += unknown
        self.unknown_share.set(self.unknown_seen / self.tokens_seen if self.tokens_seen
                               else 0.0)
