"""Which backend serves an artifact folder, from its manifest: `load_backend`.

ONNX artifacts run in ONNX Runtime with nothing else imported; Hugging Face folders
(teacher, students), neural-compressor and TensorRT artifacts import PyTorch and their
own libraries (edgener.torch_backends) only when one of them is loaded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgener.artifacts import ArtifactError
from edgener.extras import needs_extra
from edgener.runtime import Backend, OnnxBackend

# backend name in a quantized manifest -> the model file in its folder
MODEL_FILES = {"onnxruntime": "model.onnx", "neural-compressor": "inc",
               "torch-tensorrt": "model.ep", "tensorrt": "model.engine"}


@dataclasses.dataclass(frozen=True)
class ShapeProfile:
    """The [batch, sequence] shapes an engine accepts (min to max), tuned for opt."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def as_dict(self) -> dict:
        return {"axes": ["batch", "sequence"], "min": list(self.min), "opt": list(self.opt),
                "max": list(self.max)}

    @classmethod
    def from_dict(cls, shapes: dict) -> ShapeProfile:
        return cls(*(tuple(shapes[key]) for key in ("min", "opt", "max")))

    def example_shape(self) -> tuple[int, int]:
        """A tracing shape inside the profile: torch.export specializes an axis traced at
        size 1, so dynamic axes are traced at 2 or more."""
        batch, length = (min(hi, max(opt, 2)) if hi > lo else lo
                         for lo, opt, hi in zip(self.min, self.opt, self.max, strict=True))
        return batch, length


def load_backend(folder: str | Path, manifest: dict, threads: int | None = None) -> Backend:
    """The backend that serves the artifact in `folder` (its manifest already read).

    `threads` fixes the CPU threads (torch's intra-op pool, or the ONNX Runtime session's);
    None leaves the libraries' defaults (all cores)."""
    folder = Path(folder)
    if manifest.get("stage") in ("teacher", "student"):
        with needs_extra(f"{folder} (a PyTorch model folder)"):
            from edgener.torch_backends import hf_backend

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
        from edgener import torch_backends
        if backend == "neural-compressor":
            return torch_backends.IncBackend(path, threads)
        return torch_backends.engine_backend(folder, manifest, path)
