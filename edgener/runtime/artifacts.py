"""Run folders on disk: atomic writes, manifests, file records, and clear errors for missing
or damaged stages.

Stages talk only through runs/<run>/<stage> folders. A folder is published by building it
under a temporary name and renaming it into place, so a crash never leaves a half-written
model where a later stage would load it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgener.runtime.errors import UserError

MANIFEST = "manifest.json"
CARD = "README.md"
HASH_CHUNK = 1 << 20  # bytes read at a time: model files can be larger than memory allows
# How to rebuild a folder of each stage. --fresh because a stage that finds its manifest
# current skips the folder, and a damaged file leaves the manifest as it was.
REBUILD = {
    "teacher": "make teacher ARGS=--fresh",
    "student": "make distill ARGS=--fresh",
    "quantized": "make quantize ARGS=--fresh",
}


class ArtifactError(UserError, RuntimeError):
    """A stage's input folder is missing or incomplete; the message says how to make it."""


# In the name of every file being written, until it is renamed into place.
TEMP_MARK = ".tmp-"


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Whole or not at all: a temporary file in the same folder, flushed to disk, then
    renamed over the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextmanager
def publish_dir(final: str | Path):
    """Yield a staging folder; on success it replaces `final` in one rename.

    On any error the staging folder is removed and `final` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = final.parent / f".{final.name}.retired-{os.getpid()}"
    if final.exists():
        os.replace(final, retired)
    os.replace(staging, final)
    shutil.rmtree(retired, ignore_errors=True)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(folder: str | Path) -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} of every file under `folder`, sorted.

    The manifest cannot record its own hash. The model card is left out too: it is
    documentation that people edit (on the hub, say) and no loader reads, so an edited
    card must not make a sound model refuse to load."""
    folder = Path(folder)
    records = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative in (MANIFEST, CARD):
            continue
        records[relative] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    return records


def verify_files(folder: str | Path, manifest: dict, hashes: bool = False) -> None:
    """Check the files a manifest records against `folder`: present and of the recorded
    size, and with `hashes` of the recorded SHA-256 too. Raises an ArtifactError of one
    line naming the first bad file and the command that rebuilds the folder.

    A manifest without records (published before they existed) passes."""
    folder = Path(folder)
    records = manifest.get("files") or {}
    rebuild = REBUILD.get(manifest.get("stage"), "the stage that made it")
    # Sizes of all files first: a missing or truncated file shows without hashing gigabytes.
    for relative, record in records.items():
        path = folder / relative
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; rebuild with `{rebuild}`")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise ArtifactError(f"{path} has size {size} bytes instead of {record['bytes']} "
                                f"(truncated or replaced); rebuild with `{rebuild}`")
    if not hashes:
        return
    for relative, record in records.items():
        path = folder / relative
        if sha256_of(path) != record["sha256"]:
            raise ArtifactError(f"{path}: SHA-256 mismatch (its content changed after it was "
                                f"published); rebuild with `{rebuild}`")


def read_manifest(folder: str | Path, stage: str | tuple[str, ...], make_hint: str) -> dict:
    """The manifest of a published stage folder (of `stage`, or of any of several), or an
    ArtifactError saying how to make it."""
    folder = Path(folder)
    stages = (stage,) if isinstance(stage, str) else stage
    wanted = " or ".join(stages)
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder} holds no {wanted} output ({MANIFEST} missing); "
                            f"run `{make_hint}` first")
    try:
        manifest = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is corrupt ({error}); rerun `{make_hint}`") from None
    if manifest.get("stage") not in stages:
        raise ArtifactError(f"{folder} holds a {manifest.get('stage')!r} output, "
                            f"not {wanted}; run `{make_hint}`")
    return manifest
