"""Publishing what a stage made: its manifest (what it is, how and where it was made) and
the folder itself, sealed with its file records and model card in one atomic step; and
publishing a trt-int8 folder again with its engine rebuilt for this machine
(`edge-ner build-engine FOLDER`: from the model.qdq.onnx it ships, on the target device,
a Jetson with JetPack's TensorRT 10, say)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from edgener.backends.engines import (
    BINDING,
    ENGINE,
    ENGINE_SOURCE,
    ShapeProfile,
    build_engine,
    machine_facts,
)
from edgener.runtime.artifacts import (
    CARD,
    MANIFEST,
    ArtifactError,
    file_records,
    publish_dir,
    read_json,
    write_json_atomic,
    write_text_atomic,
)
from edgener.training.cards import render_card


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
    manifest = {**manifest, "files": file_records(staging)}
    write_text_atomic(staging / CARD, render_card(manifest, metrics, final))
    write_json_atomic(staging / MANIFEST, manifest)
    return manifest


def rebuild_engine(folder: str | Path) -> dict:
    """Rebuild the engine of a trt-int8 folder from its model.qdq.onnx on this machine,
    with the shapes its manifest records, and publish the folder again (atomically) with
    this machine's facts. Returns the new manifest."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(f"{folder} is no artifact folder ({MANIFEST} missing)")
    manifest = read_json(folder / MANIFEST)
    if manifest.get("backend") != "tensorrt":
        raise ArtifactError(f"{folder} is a {manifest.get('backend')} artifact; build-engine "
                            "rebuilds TensorRT INT8 engines (trt-int8 folders)")
    if not (folder / ENGINE_SOURCE).is_file():
        raise ArtifactError(f"{folder} lacks {ENGINE_SOURCE}, the engine's source; rebuild "
                            "the folder with `make quantize ARGS=--fresh`")
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError as error:
        raise ArtifactError(f"build-engine needs TensorRT's Python bindings and PyTorch "
                            f"({error.name} is not installed; on a Jetson both come with "
                            "JetPack)") from error
    if not torch.cuda.is_available():
        raise ArtifactError("build-engine needs an NVIDIA GPU; this machine has no CUDA device")
    settings = manifest["tensorrt"]
    profile = ShapeProfile.from_dict(settings["shapes"])
    here = machine_facts()
    started = time.time()
    with publish_dir(folder) as staging:
        for path in folder.iterdir():
            if path.is_file() and path.name != ENGINE:
                (staging / path.name).write_bytes(path.read_bytes())
        io = build_engine(staging / ENGINE_SOURCE, staging / ENGINE, profile)
        previous = {key: settings.get(key) for key in (*BINDING, "cuda_version")}
        first = settings.get("rebuilt", {})
        manifest["tensorrt"] = settings | here | {
            "io_dtypes": io,
            "rebuilt": {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "was": previous,
                        "seconds": round(time.time() - started, 1),
                        # No data travels with an artifact: its F1 and latency are the
                        # first build's, on its GPU.
                        "f1_measured_on": first.get("f1_measured_on", previous["gpu"]),
                        "first_build_latency": first.get("first_build_latency",
                                                         manifest.get("latency"))}}
        manifest["latency"] = None
        manifest["size_mb"] = round((staging / ENGINE).stat().st_size / 2**20, 2)
        metrics = read_json(folder / "metrics.json")
        return seal_folder(staging, folder, manifest, metrics)
