"""What the serving commands do: predict, label, evaluate, info, serve and build-engine
(the pipeline's stages parse and run their own options)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from pathlib import Path
from typing import IO, TYPE_CHECKING

from edgener.runtime.console import get_console
from edgener.runtime.errors import UserError, needs_extra

if TYPE_CHECKING:
    from edgener.predictor import Predictor

# Lines read from a stream per call: enough that sorting their windows by length keeps the
# padding small (CoNLL-2003 sentences average ~19 tokens: ~40 model calls of 512), never
# the whole input in memory.
CHUNK_LINES = 1024


def load(args: argparse.Namespace) -> Predictor:
    from edgener.predictor import load_predictor

    return load_predictor(args.artifact, args.threads, args.max_batch_tokens)


def json_line(text: str, found) -> str:
    return json.dumps({"text": text, "entities": [e.as_dict() for e in found]},
                      ensure_ascii=False)


def chunks(items: Iterable, size: int, more_ready: Callable[[], bool] | None = None
           ) -> Iterator[list]:
    """Lists of up to `size` items. With `more_ready`, a list is also cut when no more
    input is waiting, so a line typed (or appended to a followed log) is answered now."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size or (more_ready is not None and not more_ready()):
            yield batch
            batch = []
    if batch:
        yield batch


def stdin_ready() -> bool:
    """Whether more of stdin can be read without waiting."""
    import select

    try:
        return bool(select.select([sys.stdin.buffer], [], [], 0)[0])
    except (OSError, ValueError):  # not selectable (a Windows console): read on
        return True


def tagged(predictor: Predictor, texts: Iterable[str],
           more_ready: Callable[[], bool] | None = None) -> Iterator[tuple[str, list]]:
    """Each text with its entities, chunk by chunk: a long input is never held whole in
    memory."""
    for batch in chunks(texts, CHUNK_LINES, more_ready):
        yield from zip(batch, predictor.predict_batch(batch), strict=True)


def predict_lines(predictor: Predictor, texts: Iterable[str],
                  more_ready: Callable[[], bool] | None = None) -> Iterator[str]:
    """A JSON line for each text."""
    return (json_line(text, found) for text, found in tagged(predictor, texts, more_ready))


def command_predict(args: argparse.Namespace) -> int:
    predictor = load(args)
    if args.document:  # one document: every text is read at once, beside the others
        texts = args.text or list(read_lines(sys.stdin.buffer, "stdin"))
        found = predictor.predict_batch(texts, [0] * len(texts))
        for text, entities in zip(texts, found, strict=True):
            print(json_line(text, entities), flush=True)
        return 0
    if args.text:
        lines = predict_lines(predictor, args.text)
    else:
        lines = predict_lines(predictor, read_lines(sys.stdin.buffer, "stdin"), stdin_ready)
    for line in lines:
        print(line, flush=True)
    return 0


class ByteProgress:
    """Bytes of the input read so far, as a bar on stderr when it is a terminal."""

    def __init__(self, path: Path, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

            self.bar = Progress("{task.description}", BarColumn(), DownloadColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True))
            self.task = self.bar.add_task(f"labelling {path.name}", total=path.stat().st_size)
            self.bar.start()

    def advance(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def is_word_line(line: str) -> bool:
    """A CoNLL line holding a token (not a blank line between sentences, not -DOCSTART-)."""
    columns = line.split(maxsplit=1)
    return bool(columns) and columns[0] != "-DOCSTART-"


def conll_blocks(lines: Iterable[str]) -> Iterator[tuple[list[str], list[str]]]:
    """(lines, words) of each sentence of a CoNLL file, and of each run of lines between
    sentences (blank and -DOCSTART- lines, with no words), in file order."""
    block: list[str] = []
    words: list[str] = []
    for line in lines:
        is_word = is_word_line(line)
        if is_word != bool(words) and block:
            yield block, words
            block, words = [], []
        block.append(line)
        if is_word:
            words.append(line.split()[0])
    if block:
        yield block, words


def documents_of(blocks: Iterable[tuple[list[str], list[str]]]
                 ) -> Iterator[tuple[list[str], list[str], int]]:
    """(lines, words, document) of each block: a -DOCSTART- line starts a new document."""
    document = 0
    for block, words in blocks:
        document += any(line.split(maxsplit=1)[:1] == ["-DOCSTART-"] for line in block)
        yield block, words, document


def label_conll(predictor: Predictor, lines: Iterable[str], out: IO[str]) -> None:
    """Each token line with its predicted tag as a last column (separated as the line's
    columns are); other lines as they were. Read in chunks, each sentence in its document
    where the artifact takes context: the sentences just beyond a chunk's edges are read
    with it as context, so a chunk edge changes no tag; an artifact that packs documents
    into windows reads a document at a time (a file without -DOCSTART- lines whole)."""
    reach = predictor.encoder.context_tokens
    blocks = documents_of(conll_blocks(lines))
    groups = (list(document) for _, document in groupby(blocks, key=lambda b: b[2])) \
        if predictor.encoder.pack_documents else chunks(blocks, CHUNK_LINES)
    pending: deque[list] = deque()  # chunks read, not yet written
    before: list[tuple[list[str], int]] = []  # the last sentences written
    exhausted = False
    while True:
        # Read ahead until the chunks after the next hold its right context.
        while not exhausted and (not pending or sum(
                len(words) for chunk in list(pending)[1:] for words, _ in sentences_of(chunk))
                < reach):
            chunk = next(groups, None)
            exhausted = chunk is None
            if chunk is not None:
                pending.append(chunk)
        if not pending:
            return
        group = pending.popleft()
        own = sentences_of(group)
        after = [sentence for chunk in pending for sentence in sentences_of(chunk)]
        edges = (near(before[::-1], reach)[::-1], near(after, reach)) if reach else ([], [])
        read = edges[0] + own + edges[1]
        tagged = iter(predictor.tag([words for words, _ in read],
                                    [document for _, document in read])[len(edges[0]):])
        for block, words, _ in group:
            tags = iter(next(tagged)[0] if words else [])
            for line in block:
                if is_word_line(line):
                    separator = "\t" if "\t" in line else " "
                    out.write(f"{line.rstrip()}{separator}{next(tags)}\n")
                else:
                    out.write(line + "\n")
        before = near((before + own)[::-1], reach)[::-1]


def sentences_of(chunk: list[tuple[list[str], list[str], int]]
                 ) -> list[tuple[list[str], int]]:
    return [(words, document) for _, words, document in chunk if words]


def near(sentences: list[tuple[list[str], int]], words: int) -> list[tuple[list[str], int]]:
    """The first of `sentences` up to `words` words in all (the context any of them can
    lend a sentence next to them)."""
    taken, count = [], 0
    for sentence in sentences:
        if count >= words:
            break
        taken.append(sentence)
        count += len(sentence[0])
    return taken


def command_label(args: argparse.Namespace) -> int:
    from edgener.labelling.job import is_table_input

    if (args.engine != "local" or args.format == "parquet" or len(args.input) > 1
            or is_table_input(args.input[0]) or (args.output and names_a_folder(args.output))):
        if not args.output:
            raise UserError("name a folder for the labelled files with --output DIR")
        from edgener.labelling.command import label_files

        return label_files(args)
    if args.workers or args.address:
        raise UserError("--workers and --address are for --engine ray")
    path = Path(args.input[0])
    if not path.is_file():
        raise UserError(f"no input file at {path}")
    if args.output and Path(args.output).resolve() == path.resolve():
        raise UserError(f"--output {args.output} is the input file; write elsewhere")
    predictor = load(args)
    # The bar goes to stderr; over entities printed to the same terminal it would garble.
    progress = ByteProgress(path, enabled=args.output is not None or not sys.stdout.isatty())
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        with open(path, "rb") as raw:
            lines = read_lines(raw, path.name, progress.advance)
            if args.format == "conll":
                label_conll(predictor, lines, out)
            elif args.format in ("doccano", "label-studio"):
                label_for_tool(predictor, lines, out, args.format, Path(args.artifact).name)
            else:
                for line in predict_lines(predictor, lines):
                    out.write(line + "\n")
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    return 0


def label_for_tool(predictor: Predictor, lines: Iterable[str], out: IO[str], shape: str,
                   model: str) -> None:
    """Pre-annotations an annotation tool imports: doccano's JSON lines, or Label Studio's
    JSON list of tasks (written as it goes: opened, a task a line, closed)."""
    from edgener.runtime.spans import as_record

    records = (json.dumps(as_record(text, [e.as_dict() for e in found], shape, model),
                          ensure_ascii=False) for text, found in tagged(predictor, lines))
    if shape == "doccano":
        out.writelines(record + "\n" for record in records)
        return
    out.write("[")
    for index, record in enumerate(records):
        out.write(("\n" if index == 0 else ",\n") + record)
    out.write("\n]\n")


def names_a_folder(output: str) -> bool:
    """An existing folder, a name ending in a slash or a name without a suffix
    (`labelled/`, `labelled`) is a folder; `labelled.jsonl` is a file."""
    return output.endswith(("/", os.sep)) or Path(output).is_dir() or not Path(output).suffix


def read_lines(raw: IO[bytes], name: str,
               progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """Decoded lines of UTF-8 input (a leading byte-order mark dropped), line ends cut."""
    for number, line in enumerate(raw, start=1):
        if progress is not None:
            progress(raw.tell())
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{name}:{number}: not valid UTF-8 (byte {line[error.start]:#04x} "
                            f"at column {error.start + 1})") from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield text.rstrip("\r\n")


def command_evaluate(args: argparse.Namespace) -> int:
    from edgener.runtime.conll import find_split_file
    from edgener.runtime.coverage import vocabulary_coverage
    from edgener.runtime.metrics import entity_scores
    from edgener.runtime.spans import read_labelled
    from edgener.runtime.tags import detect_scheme, to_iob2

    data = Path(args.data)
    path = find_split_file(data, args.split) if data.is_dir() else data
    sentences, span_counts = read_labelled(path, args.snap_spans, args.span_format)
    scheme = detect_scheme([s.tags for s in sentences])
    gold = [to_iob2(s.tags, scheme) for s in sentences]
    predictor = load(args)
    predicted = [tags for tags, _ in predictor.tag([s.words for s in sentences],
                                                   [s.document for s in sentences])]
    scores = entity_scores(gold, predicted)
    coverage = vocabulary_coverage(predictor.encoder, [s.words for s in sentences])
    if args.json:
        spans = {"spans": span_counts.summary()} if span_counts else {}
        print(json.dumps({"data": str(path), "sentences": len(sentences), **scores,
                          "vocabulary": coverage.as_dict(), **spans}, indent=2,
                         ensure_ascii=False))
        return 0
    get_console().print(scores_table(scores, f"{args.artifact} on {path} "
                                             f"({len(sentences)} sentences)"))
    get_console().print(f"vocabulary: {coverage.describe()}", highlight=False,
                        soft_wrap=True)
    if span_counts:
        get_console().print(f"spans: {span_counts.summary()}", highlight=False, soft_wrap=True)
    return 0


def command_serve(args: argparse.Namespace) -> int:
    from edgener.runtime.predictor import read_artifact_manifest

    read_artifact_manifest(Path(args.artifact))  # a wrong folder fails now, in one line
    with needs_extra("edge-ner serve"):
        from edgener.serve.auth import is_loopback
        from edgener.serve.config import ServeConfig
        from edgener.serve.server import serve

    key = api_key(args)
    if not key and not is_loopback(args.host) and not args.insecure:
        raise UserError(f"refusing to serve on {args.host} without an API key: anyone who "
                        "can reach the port could use the model and read its metrics; set "
                        f"{API_KEY_ENV} (or --api-key-file), or pass --insecure where the "
                        "network alone decides who connects")
    if bool(args.ssl_keyfile) != bool(args.ssl_certfile):
        raise UserError("HTTPS needs both --ssl-keyfile and --ssl-certfile")
    for path in (args.ssl_keyfile, args.ssl_certfile):
        if path and not Path(path).is_file():
            raise UserError(f"no file at {path}")
    config = ServeConfig(threads=args.threads, max_batch_tokens=args.max_batch_tokens,
                         max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                         max_text_chars=args.max_text_chars, max_texts=args.max_texts,
                         max_body_bytes=args.max_body_bytes, timeout_s=args.timeout_ms / 1000,
                         spinning=args.spinning, api_key=key,
                         metrics_need_key=not args.metrics_without_key)
    return serve(args.artifact, args.host, args.port, config, args.log_json,
                 args.ssl_keyfile, args.ssl_certfile)


API_KEY_ENV = "EDGE_NER_API_KEY"


def api_key(args: argparse.Namespace) -> str | None:
    """The key from --api-key, else --api-key-file, else $EDGE_NER_API_KEY (the last two
    keep it out of process listings and shell history)."""
    if args.api_key is not None:
        key = args.api_key
    elif args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise UserError(f"cannot read --api-key-file {args.api_key_file}: "
                            f"{error.strerror}") from None
    else:
        key = os.environ.get(API_KEY_ENV)
        if key is None:
            return None
    if not key.strip():
        raise UserError("the API key is empty")
    return key.strip()


def scores_table(scores: dict, title: str):
    """Precision, recall, F1 (%) and gold entities per type, then over all types."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("type", "precision", "recall", "F1", "entities"):
        table.add_column(column, justify="left" if column == "type" else "right")
    rows = [*scores["per_type"].items(), ("all", scores)]
    for index, (kind, values) in enumerate(rows):
        table.add_row(kind, *(f"{100 * values[k]:.2f}" for k in ("precision", "recall", "f1")),
                      str(values["support"]), end_section=index == len(rows) - 2)
    return table


def command_build_engine(args: argparse.Namespace) -> int:
    from edgener.backends.engines import ENGINE

    with needs_extra("edge-ner build-engine"):
        from edgener.training.publish import rebuild_engine

    with get_console().status(f"building {ENGINE} for this GPU"):
        manifest = rebuild_engine(args.artifact)
    facts = manifest["tensorrt"]
    get_console().print(f"{Path(args.artifact) / ENGINE}: built for {facts['gpu']} (compute "
                        f"{facts['compute_capability']}) with TensorRT "
                        f"{facts['tensorrt_version']} in {facts['rebuilt']['seconds']:.0f} s",
                        highlight=False, soft_wrap=True)
    return 0


def command_info(args: argparse.Namespace) -> int:
    from edgener.runtime.artifacts import read_json
    from edgener.runtime.predictor import read_artifact_manifest

    folder = Path(args.artifact)
    manifest = read_artifact_manifest(folder)
    if args.verify:
        from edgener.runtime.artifacts import verify_files

        if not manifest.get("files"):
            raise UserError(f"{folder}: its manifest records no file hashes (published "
                            "before they were recorded), so there is nothing to verify "
                            "against; rebuild it to get them")
        verify_files(folder, manifest, hashes=True)
    metrics_path = folder / "metrics.json"
    try:
        metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    except ValueError as error:
        raise UserError(f"{metrics_path} is corrupt ({error})") from None
    facts = artifact_facts(folder, manifest, metrics)
    if args.verify:
        facts["verified"] = f"all {len(manifest['files'])} files match their SHA-256"
    if args.json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
        return 0
    width = max(len(key) for key in facts)
    for key, value in facts.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) \
            else value
        print(f"{key:<{width}}  {shown}")
    return 0


def made_from(manifest: dict) -> str:
    """What the artifact was made from: a quantized one's source model, a student's teacher,
    a teacher's pretrained model."""
    if manifest.get("source_name"):
        return f"{manifest['source_name']} ({manifest.get('source', '')})"
    if manifest.get("teacher"):
        return f"teacher ({manifest['teacher'].get('dir', '')})"
    return manifest.get("model_source") or manifest.get("base_model") or "unknown"


def artifact_facts(folder: Path, manifest: dict, metrics: dict) -> dict:
    """What `edge-ner info` shows: what the artifact is and what it scores."""
    stage = manifest["stage"]
    backend = manifest.get("backend", "pytorch")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    facts = {
        "artifact": str(folder),
        "stage": stage,
        "made_from": made_from(manifest),
        "backend": backend,
        "precision": manifest.get("precision", "fp32"),
        "size_mb": round(size / 2**20, 1),
    }
    for split in ("valid", "test"):
        scores = metrics.get(split) or {}
        if "f1" in scores:
            facts[f"{split}_f1"] = round(100 * scores["f1"], 2)
    facts["labels"] = manifest.get("labels") or []
    facts["encoding"] = manifest["encoding"]
    facts["created"] = manifest.get("created", "")
    return facts
