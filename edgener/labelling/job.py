"""A labelling job: its inputs cut into shards, and what tagging one shard writes.

A shard is a run of consecutive rows of one input file. Its output is one file named by the
input and its first row, written under a temporary name and renamed once complete, so an
output folder only ever holds whole shards; a rerun of the same job skips the shards
already there. Every engine (one process, or Ray Data's actors) runs `label_shard`, so
their outputs are the same file for file.
"""

from __future__ import annotations

import fnmatch
import glob
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from edgener.runtime.artifacts import TEMP_MARK, read_json, write_bytes_atomic, write_json_atomic
from edgener.runtime.errors import UserError, needs_extra

if TYPE_CHECKING:
    from edgener.runtime.predictor import Predictor

KINDS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
         ".txt": "text"}
OUTPUT_FORMATS = ("jsonl", "parquet")
PLAN_FILE = "_labelling.json"
SHARD_ROWS = 10_000


def kind_of(path: str) -> str:
    """parquet, jsonl or text (a text a line), by the file's suffix."""
    return KINDS.get(os.path.splitext(path)[1].lower(), "text")


def is_url(path: str) -> bool:
    return "://" in path


def is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def is_table_input(path: str) -> bool:
    """Whether an input names what only the table labelling reads: a Parquet or JSON Lines
    file, a glob, a folder or a URL."""
    return kind_of(path) != "text" or is_url(path) or is_glob(path) or Path(path).is_dir()


def remote_fs(url: str):
    """The pyarrow filesystem of an object-store URL (s3://, gs://, hdfs://...) and the path
    in it: the filesystems Ray Data's readers use."""
    with needs_extra(f"reading {url}"):
        from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(url)
    except (ValueError, OSError) as error:
        raise UserError(f"cannot open {url}: {error}") from None


def open_input(path: str) -> IO[bytes]:
    """A seekable binary file, its lines iterable."""
    if is_url(path):
        filesystem, inner = remote_fs(path)
        return io.BufferedReader(filesystem.open_input_file(inner))
    return open(path, "rb")  # noqa: SIM115


def expand_inputs(inputs: list[str]) -> list[str]:
    """Every file the inputs name, in order: files, folders (their Parquet, JSON Lines and
    .txt files), globs; local or object-store URLs. One line for any that names nothing."""
    files: list[str] = []
    for given in inputs:
        found = list_remote(given) if is_url(given) else list_local(given)
        if not found:
            raise UserError(f"{given} matches no file" if is_glob(given)
                            else f"no input at {given}")
        files.extend(found)
    if len(set(files)) != len(files):
        raise UserError("an input file is named twice; each is tagged once")
    return files


def list_local(given: str) -> list[str]:
    if is_glob(given):
        return sorted(p for p in glob.glob(given, recursive=True) if Path(p).is_file())
    path = Path(given)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix in KINDS)
    return [given] if path.is_file() else []


def list_remote(url: str) -> list[str]:
    from pyarrow import fs

    scheme = url.split("://", 1)[0]
    pattern = is_glob(url)
    base_url = url.rsplit("/", 1)[0] if pattern else url
    filesystem, base = remote_fs(base_url)
    info = filesystem.get_file_info(base)
    if info.type == fs.FileType.File and not pattern:
        return [url]
    if info.type != fs.FileType.Directory:
        return []
    children = filesystem.get_file_info(fs.FileSelector(base, recursive=not pattern))
    names = sorted(c.path for c in children if c.type == fs.FileType.File)
    if pattern:
        wanted = url.rsplit("/", 1)[1]
        names = [n for n in names if fnmatch.fnmatch(n.rsplit("/", 1)[-1], wanted)]
    else:
        names = [n for n in names if os.path.splitext(n)[1] in KINDS]
    return [f"{scheme}://{n}" for n in names]


@dataclass(frozen=True)
class Shard:
    """Rows [first, first + rows) of input number `source`; `offset` is the byte where the
    first row starts in a line file, `groups` the row groups it spans in a Parquet file."""

    path: str
    source: int
    first: int
    rows: int
    offset: int = 0
    groups: tuple[int, ...] = ()

    def name(self, output_format: str) -> str:
        return f"part-{self.source:05d}-{self.first:012d}.{output_format}"

    @classmethod
    def from_dict(cls, fields: dict) -> Shard:
        """From `asdict(shard)` gone through JSON (which makes the groups a list)."""
        return cls(**{**fields, "groups": tuple(fields["groups"])})


def plan_shards(files: list[str], shard_rows: int, column: str) -> list[Shard]:
    """The files cut into shards; a file without the text column is refused now, before
    any engine starts."""
    shards: list[Shard] = []
    for source, path in enumerate(files):
        if kind_of(path) == "parquet":
            found = list(parquet_shards(path, source, shard_rows, column))
        else:
            found = list(line_shards(path, source, shard_rows))
            if found and kind_of(path) == "jsonl":  # its first row stands for the rest
                read_rows(Shard(path, source, 0, 1, found[0].offset), column)
        shards.extend(found)
    return shards


def line_shards(path: str, source: int, shard_rows: int) -> Iterator[Shard]:
    """Shards of a text or JSON Lines file, each starting at a line's byte offset (a JSON
    Lines file's blank lines are no rows)."""
    skip_blank = kind_of(path) == "jsonl"
    first = rows = offset = position = 0
    with open_input(path) as raw:
        for line in raw:
            if not (skip_blank and not line.strip()):
                if rows == 0:
                    offset = position
                rows += 1
                if rows == shard_rows:
                    yield Shard(path, source, first, rows, offset)
                    first, rows = first + rows, 0
            position += len(line)
    if rows:
        yield Shard(path, source, first, rows, offset)


def parquet_shards(path: str, source: int, shard_rows: int, column: str) -> Iterator[Shard]:
    """Shards of whole row groups, up to `shard_rows` rows each (a larger group is one)."""
    with needs_extra(f"reading {path}"):
        import pyarrow.parquet as pq

    with open_input(path) as raw:
        try:
            metadata = pq.ParquetFile(raw).metadata
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise UserError(f"{path}: not a readable Parquet file ({error})") from None
    check_column(path, metadata.schema.names, column)
    first = rows = 0
    groups: list[int] = []
    for group in range(metadata.num_row_groups):
        size = metadata.row_group(group).num_rows
        if groups and rows + size > shard_rows:
            yield Shard(path, source, first, rows, groups=tuple(groups))
            first, rows, groups = first + rows, 0, []
        groups.append(group)
        rows += size
    if rows:
        yield Shard(path, source, first, rows, groups=tuple(groups))


@dataclass(frozen=True)
class Job:
    """What a labelling job is: the same job rerun into the same folder resumes it."""

    artifact: str
    inputs: list[str]
    column: str
    output: str
    output_format: str
    shard_rows: int = SHARD_ROWS

    def identity(self) -> dict:
        return {"artifact": str(Path(self.artifact).resolve()), "inputs": self.inputs,
                "column": self.column, "output_format": self.output_format,
                "shard_rows": self.shard_rows}


def prepare(job: Job) -> list[Shard]:
    """The job's shards: planned once and kept in the output folder, so a rerun neither
    reads its inputs again to plan nor mixes its output with another job's. Leftovers of
    an interrupted run (temporary files) are removed."""
    if is_url(job.output):
        raise UserError(f"--output {job.output}: the workers write their files themselves; "
                        "name a folder on a filesystem (on a cluster, one every node mounts)")
    out = Path(job.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file; name a folder")
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN_FILE
    if plan_path.exists():
        plan = read_json(plan_path)
        if plan["job"] != job.identity():
            raise UserError(f"{out} holds the output of another labelling job (other inputs, "
                            "artifact, column or format); name another --output folder")
        shards = [Shard.from_dict(s) for s in plan["shards"]]
    else:
        stray = [p.name for p in out.iterdir() if TEMP_MARK not in p.name]
        if stray:
            raise UserError(f"--output {out} is not empty ({stray[0]}, ...); name a new or "
                            "empty folder")
        shards = plan_shards(expand_inputs(job.inputs), job.shard_rows, job.column)
        if not shards:
            raise UserError("the inputs hold no rows to tag")
        write_json_atomic(plan_path, {"job": job.identity(),
                                      "shards": [asdict(s) for s in shards]})
    for temporary in out.glob(f"*{TEMP_MARK}*"):
        temporary.unlink()
    return shards


def pending(job: Job, shards: list[Shard]) -> list[Shard]:
    out = Path(job.output)
    return [s for s in shards if not (out / s.name(job.output_format)).exists()]


def read_rows(shard: Shard, column: str) -> tuple[list[dict] | object, list[str]]:
    """The shard's rows (dicts for line files, a pyarrow table for Parquet) and their texts."""
    kind = kind_of(shard.path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        with open_input(shard.path) as raw:
            table = pq.ParquetFile(raw).read_row_groups(list(shard.groups))
        texts = table.column(column).to_pylist()
        check_texts(texts, shard, column)
        return table, texts
    rows = []
    with open_input(shard.path) as raw:
        raw.seek(shard.offset)
        for number, line in enumerate(raw, start=1):
            if len(rows) == shard.rows:
                break
            if kind == "text":
                rows.append({column: decode(line, shard, number).rstrip("\r\n")})
            elif line.strip():
                rows.append(json_row(decode(line, shard, number), shard, number, column))
    texts = [row[column] for row in rows]
    check_texts(texts, shard, column)
    return rows, texts


def check_column(path: str, names: list[str], column: str) -> None:
    if column not in names:
        raise UserError(f"{path} has no column {column!r} (it has {', '.join(names)}); name "
                        "the text's column with --column")


def decode(line: bytes, shard: Shard, number: int) -> str:
    try:
        return line.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise UserError(f"{where(shard, number)}: not valid UTF-8 (byte "
                        f"{line[error.start]:#04x} at column {error.start + 1})") from None


def json_row(line: str, shard: Shard, number: int, column: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{where(shard, number)}: not JSON ({error.msg} at column "
                        f"{error.colno})") from None
    if not isinstance(row, dict):
        raise UserError(f"{where(shard, number)}: a JSON object a line is expected")
    if column not in row:
        raise UserError(f"{where(shard, number)}: no {column!r} field (it has "
                        f"{', '.join(row) or 'none'}); name the text's field with --column")
    return row


def where(shard: Shard, number: int) -> str:
    """A line of a line file, counted from the shard's offset when it is not the first."""
    return (f"{shard.path}:{number}" if shard.offset == 0
            else f"{shard.path}, line {number} after byte {shard.offset}")


def check_texts(texts: list, shard: Shard, column: str) -> None:
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise UserError(f"{shard.path}, row {shard.first + index + 1}: {column!r} is "
                            f"{type(text).__name__}, not text")


def entity_rows(predictor: Predictor, texts: list[str]) -> list[list[dict]]:
    """The per-batch function every engine runs: each text's entities as plain dicts."""
    return [[e.as_dict() for e in found] for found in predictor.predict_batch(texts)]


def label_shard(predictor: Predictor, job: Job, shard: Shard) -> int:
    """Tag one shard and write its output file whole; the number of rows."""
    rows, texts = read_rows(shard, job.column)
    found = entity_rows(predictor, texts)
    write_bytes_atomic(Path(job.output) / shard.name(job.output_format),
                       encode(rows, found, job.output_format))
    return len(texts)


ENTITY_FIELDS = (("type", "string"), ("text", "string"), ("start", "int64"),
                 ("end", "int64"), ("score", "float64"))


def encode(rows, found: list[list[dict]], output_format: str) -> bytes:
    """The rows with their entities, as the bytes of a JSON Lines or Parquet file."""
    if output_format == "jsonl":
        records = rows.to_pylist() if hasattr(rows, "to_pylist") else rows
        return "".join(json.dumps({**row, "entities": entities}, ensure_ascii=False,
                                  default=str) + "\n"
                       for row, entities in zip(records, found, strict=True)).encode()
    with needs_extra("writing Parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

    entity_type = pa.list_(pa.struct([(name, getattr(pa, kind)()) for name, kind in
                                      ENTITY_FIELDS]))
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    if "entities" in table.column_names:
        table = table.drop_columns(["entities"])
    table = table.append_column("entities", pa.array(found, type=entity_type))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()

