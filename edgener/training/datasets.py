"""NER datasets: train, valid and test as IOB2 sentences, from CoNLL-style files on disk or a
Hugging Face hub dataset."""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from edgener.runtime.conll import SPLIT_FILES, DataError, Sentence, find_split_file
from edgener.runtime.spans import SpanCounts, read_labelled
from edgener.runtime.tags import SCHEMES, detect_scheme, to_iob2

DATA_DIR_ENV = "EDGE_NER_DATA_DIR"
HUB_PROBE_SECONDS = 3.0  # one connection attempt before the hub is asked for a dataset


@dataclass
class Dataset:
    name: str
    source: str
    labels: list[str]
    splits: dict[str, list[Sentence]]
    files: dict[str, str]
    # Span files (an annotation tool's JSON): whether spans off word boundaries were widened,
    # and what reading each split changed.
    snap_spans: bool = False
    span_format: str = "auto"
    span_counts: dict[str, SpanCounts] = field(default_factory=dict)

    def span_summaries(self) -> dict[str, str]:
        return {split: counts.summary() for split, counts in self.span_counts.items()}

    def split(self, name: str) -> list[Sentence]:
        return self.splits[name]


def resolve_dataset_dir(dataset: str, data_dir: str | None) -> Path | None:
    """A dataset is a folder path, or a name under the data dir; None if neither exists."""
    candidates = [Path(dataset)]
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if data_dir:
        candidates.append(Path(data_dir) / dataset)
    return next((c for c in candidates if c.is_dir()), None)


def load_dataset(dataset: str, data_dir: str | None = None, scheme: str = "auto",
                 snap_spans: bool = False, span_format: str = "auto") -> Dataset:
    """Load train/valid/test as IOB2 sentences with the label set taken from train.

    A folder holds CoNLL files or an annotation tool's JSON (Lines) with character spans;
    `snap_spans` widens a span that does not fall on word boundaries to whole words (else
    it is a DataError). `span_format` names the tool's shape (doccano, label-studio,
    cluener) where telling it from the records is not wanted.

    A name that is neither a folder nor found under the data dir is looked up on the
    Hugging Face hub (needs network access); with HF_HUB_OFFLINE or HF_DATASETS_OFFLINE
    set, such a name is a DataError at once, without trying the hub.
    """
    if scheme not in SCHEMES:
        raise DataError(f"unknown tag scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    folder = resolve_dataset_dir(dataset, data_dir)
    if folder is not None:
        files = {split: find_split_file(folder, split) for split in SPLIT_FILES}
        read = {split: read_labelled(path, snap_spans, span_format)
                for split, path in files.items()}
        splits = {split: sentences for split, (sentences, _) in read.items()}
        span_counts = {split: counts for split, (_, counts) in read.items() if counts}
        source = str(folder.resolve())
    else:
        splits, files, source = _load_hub_dataset(dataset, data_dir)
        span_counts = {}
    if scheme == "auto":
        scheme = detect_scheme([s.tags for s in splits["train"]])
    for sentences in splits.values():
        for sentence in sentences:
            sentence.tags = to_iob2(sentence.tags, scheme)
    labels = label_set(splits["train"])
    for split in ("valid", "test"):
        check_known_tags(splits[split], labels, str(files[split]))
    return Dataset(dataset, source, labels, splits, {k: str(v) for k, v in files.items()},
                   snap_spans, span_format, span_counts)


def recorded_dataset(manifest: dict) -> str:
    """The dataset a published model was trained on, as load_dataset takes it: the recorded
    folder while it still exists, else the recorded name (looked up under the data dir)."""
    recorded = manifest["dataset"]
    return recorded["source"] if Path(recorded["source"]).is_dir() else recorded["name"]


def load_recorded_dataset(manifest: dict, dataset: str | None, data_dir: str | None
                          ) -> Dataset:
    """The dataset a published model was trained on (or `dataset`, where given), read as
    its teacher read it."""
    recorded = manifest["dataset"]
    return load_dataset(dataset or recorded_dataset(manifest), data_dir,
                        snap_spans=recorded.get("snap_spans", False),
                        span_format=recorded.get("span_format", "auto"))


def label_set(sentences: list[Sentence]) -> list[str]:
    """O, then B- and I- of every entity type in train (I-X even where train has only
    one-word X entities: a longer X elsewhere is no error), grouped by type."""
    types = sorted({tag[2:] for sentence in sentences for tag in sentence.tags if tag != "O"})
    return ["O", *(f"{prefix}-{kind}" for kind in types for prefix in "BI")]


def check_known_tags(sentences: list[Sentence], labels: list[str], filename: str) -> None:
    known = set(labels)
    for sentence in sentences:
        lines = sentence.lines or [0] * len(sentence.tags)
        for word, tag, line in zip(sentence.words, sentence.tags, lines, strict=True):
            if tag not in known:
                raise DataError(f"{filename}:{line}: tag {tag!r} (on {word!r}) does not "
                                "occur in train")


def hub_unreachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Why the Hugging Face hub (HF_ENDPOINT, or the proxy for it) takes no connection, found
    within `timeout` seconds; None when it does."""
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    target = urllib.parse.urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(
        endpoint.hostname or "") else endpoint
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((target.hostname, port), timeout=timeout):
            return None
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        return f"{target.hostname}:{port} ({reason})"


def _load_hub_dataset(name: str, data_dir: str | None):
    where = data_dir or os.environ.get(DATA_DIR_ENV) or "(no data dir set)"
    # Offline, `datasets` still retries the hub for half a minute before it gives up; the
    # user said there is no hub, so say at once where the dataset was looked for. The
    # values are those huggingface_hub reads as true.
    offline = [variable for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
               if os.environ.get(variable, "").strip().upper() in {"1", "TRUE", "YES", "ON"}]
    if offline:
        raise DataError(f"dataset {name!r} is neither a folder nor under the data dir {where}, "
                        f"and the Hugging Face hub is offline ({offline[0]} is set)")
    # Where the hub cannot be reached at all, `datasets` retries for half a minute too.
    unreachable = hub_unreachable()
    if unreachable:
        raise DataError(f"dataset {name!r} is neither a folder nor under the data dir {where}, "
                        f"and the Hugging Face hub cannot be reached: {unreachable}")
    try:
        import datasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError(f"dataset {name!r} is no folder and `datasets` is not installed") from None
    try:
        hub = datasets.load_dataset(name)
    except Exception as error:  # the hub raises many kinds; all mean "not available"
        detail = (str(error).splitlines() or [type(error).__name__])[0]  # str() may be ""
        raise DataError(
            f"dataset {name!r} is neither a folder nor under the data dir {where}, "
            f"and the Hugging Face hub could not provide it: {detail}"
        ) from None
    split_names = {"train": "train", "valid": "validation", "test": "test"}
    splits, files = {}, {}
    for split, hub_split in split_names.items():
        if hub_split not in hub:
            raise DataError(f"hub dataset {name!r} has no {hub_split!r} split")
        part = hub[hub_split]
        names = part.features["ner_tags"].feature.names
        splits[split] = [
            Sentence(list(row["tokens"]), [names[i] for i in row["ner_tags"]])
            for row in part
            if row["tokens"]
        ]
        files[split] = f"hf://{name}/{hub_split}"
    return splits, files, f"hf://{name}"
