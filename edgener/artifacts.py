"""Run folders on disk: atomic writes, manifests, and clear errors for missing stages.

Stages talk only through runs/<run>/<stage> folders. A folder is published by building it
under a temporary name and renaming it into place, so a crash never leaves a half-written
model where a later stage would load it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from edgener.errors import UserError

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


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def fingerprint(data) -> str:
    """A short stable hash of JSON-able data (used to tell whether a config changed)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment() -> dict:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
    }


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 7B13"), or the architecture where it is not known."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The CPU model, its core count and the OS: where a timing was taken."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def make_manifest(stage: str, **fields) -> dict:
    return {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        **fields,
    }


def describe_model(model) -> dict:
    """Shape facts of a Hugging Face model, for manifests and tables."""
    config = model.config
    return {
        # The class itself: config.architectures still names the pretrained checkpoint's
        # class (BertModel for an encoder fine-tuned here) until the model is saved.
        "architecture": type(model).__name__,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "params": sum(p.numel() for p in model.parameters()),
    }


def publish_model(out_dir: str | Path, model, tokenizer, labels: list[str], config: dict,
                  metrics: dict, manifest: dict) -> dict:
    """Write a model folder (Hugging Face weights and tokenizer, labels, resolved config,
    metrics, model card, manifest) in one atomic step; returns the manifest written."""
    import yaml

    with publish_dir(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json_atomic(staging / "labels.json", labels)
        (staging / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        write_json_atomic(staging / "metrics.json", metrics)
        return seal_folder(staging, out_dir, manifest, metrics)


def seal_folder(staging: Path, final: str | Path, manifest: dict, metrics: dict) -> dict:
    """The last step of publishing a servable folder, once every other file is in
    `staging`: record the files in the manifest, write the model card and the manifest.
    Returns the manifest written."""
    from edgener.cards import render_card

    manifest = {**manifest, "files": file_records(staging)}
    write_text_atomic(staging / CARD, render_card(manifest, metrics, final))
    write_json_atomic(staging / MANIFEST, manifest)
    return manifest


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
