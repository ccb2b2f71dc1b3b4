"""Any artifact folder to a Predictor: raw text in, entities with character offsets out.

    from edgener.predictor import load_predictor

    predictor = load_predictor("runs/conll2003/quantized/L3-ort-int8-static", threads=2)
    predictor.predict("Angela Merkel visited Paris.")
    # [Entity(type='PER', text='Angela Merkel', start=0, end=13, score=0.99), ...]

The one place that knows every backend. ONNX artifacts run in ONNX Runtime with nothing
beyond the base install imported (edgener.runtime); Hugging Face folders (teacher,
students), neural-compressor and TensorRT artifacts import PyTorch and their own libraries
(edgener.backends) only when one of them is loaded, and say which extra to install if it
is missing.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from edgener.runtime.artifacts import ArtifactError, verify_files
from edgener.runtime.backend import Backend, OnnxBackend
from edgener.runtime.errors import needs_extra
from edgener.runtime.inference import BATCH_TOKENS
from edgener.runtime.predictor import (
    Entity,
    Predictor,
    artifact_encoder,
    read_artifact_manifest,
)

__all__ = ["Entity", "Predictor", "load_backend", "load_predictor", "open_predictor"]

# backend name in a quantized manifest -> the model file in its folder
MODEL_FILES = {"onnxruntime": "model.onnx", "neural-compressor": "inc",
               "torch-tensorrt": "model.ep", "tensorrt": "model.engine"}


def load_backend(folder: str | Path, manifest: dict, threads: int | None = None) -> Backend:
    """The backend that serves the artifact in `folder` (its manifest already read).

    `threads` fixes the CPU threads (torch's intra-op pool, or the ONNX Runtime session's);
    None leaves the libraries' defaults (all cores)."""
    folder = Path(folder)
    if manifest.get("stage") in ("teacher", "student"):
        with needs_extra(f"{folder} (a PyTorch model folder)"):
            from edgener.backends.torch_eager import hf_backend

            return hf_backend(folder, threads)
    backend = manifest.get("backend")
    if backend not in MODEL_FILES:
        raise ArtifactError(f"{folder}: unknown artifact backend {backend!r} in its manifest; "
                            f"known: {', '.join(MODEL_FILES)}")
    path = folder / MODEL_FILES[backend]
    if not path.exists():
        raise ArtifactError(f"{folder} lacks {path.name}, its {backend} model; rebuild it with "
                            "`make quantize ARGS=--fresh`")
    if backend == "onnxruntime":
        return OnnxBackend(path, threads)
    with needs_extra(f"{folder} (a {backend} artifact)"):
        if backend == "neural-compressor":
            from edgener.backends.torch_graph import IncBackend

            return IncBackend(path, threads)
        from edgener.backends.tensorrt import engine_backend

        return engine_backend(folder, manifest, path)


def open_predictor(folder: str | Path, threads: int | None = None,
                   backend: Backend | None = None,
                   max_batch_tokens: int = BATCH_TOKENS) -> Predictor:
    """A new Predictor for the artifact in `folder` (a teacher, student or quantized
    folder); `backend` replaces the one its manifest names (the benchmark's peers and the
    server's tuned ONNX session use this)."""
    folder = Path(folder)
    manifest = read_artifact_manifest(folder)
    # Sizes only: a truncated copy is caught for the price of a stat per file; the
    # hashes (`edge-ner info --verify`) would cost a read of every byte at each start.
    verify_files(folder, manifest)
    encoder, labels = artifact_encoder(folder, manifest)
    if backend is None:
        backend = load_backend(folder, manifest, threads)
    return Predictor(backend, encoder, labels, manifest, max_batch_tokens)


@lru_cache(maxsize=8)
def _cached(folder: Path, threads: int | None, max_batch_tokens: int) -> Predictor:
    return open_predictor(folder, threads, max_batch_tokens=max_batch_tokens)


def load_predictor(folder: str | Path, threads: int | None = None,
                   max_batch_tokens: int = BATCH_TOKENS) -> Predictor:
    """A Predictor for `folder`, loaded once per process and reused."""
    return _cached(Path(folder).resolve(), threads, max_batch_tokens)
