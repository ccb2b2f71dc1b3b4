"""File records in manifests: every published folder lists its files with size and SHA-256,
and a damaged file is one line naming it and the command that rebuilds it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

from edgener.runtime import artifacts
from edgener.runtime.artifacts import (
    ArtifactError,
    file_records,
    read_json,
    verify_files,
    write_json_atomic,
)
from edgener.training.backbone import load_stage_model
from edgener.training.publish import describe_model, make_manifest, publish_model

LABELS = ["O", "B-PER", "I-PER"]
ENCODING = {"max_length": 16, "window_overlap": 4, "case_features": False}


@pytest.fixture(scope="module")
def tiny_parts(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    config = BertConfig.from_pretrained(tiny_bert, num_labels=len(LABELS))
    torch.manual_seed(0)
    return BertForTokenClassification(config).eval(), tokenizer


@pytest.fixture(scope="module")
def published(tiny_parts, tmp_path_factory) -> dict[str, Path]:
    """A tiny teacher and student, published the way the stages publish them."""
    model, tokenizer = tiny_parts
    root = tmp_path_factory.mktemp("published")
    metrics = {"valid": {"f1": 0.5, "per_type": {}}, "test": {"f1": 0.25, "per_type": {}}}
    folders = {"teacher": root / "teacher", "student": root / "students" / "S1"}
    for stage, folder in folders.items():
        publish_model(folder, model, tokenizer, LABELS, {"seed": 1}, metrics,
                      make_manifest(stage, labels=LABELS, encoding=ENCODING,
                                    **describe_model(model)))
    return folders


@pytest.fixture
def student(published, tmp_path) -> Path:
    """A copy of the published student, free to damage."""
    return Path(shutil.copytree(published["student"], tmp_path / "S1"))


def manifest_of(folder: Path) -> dict:
    return read_json(folder / "manifest.json")


def test_manifest_records_every_file_with_size_and_sha256(published):
    folder = published["teacher"]
    records = manifest_of(folder)["files"]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    # Not the manifest (it cannot hold its own hash), nor the card (people edit cards).
    assert set(records) == on_disk - {"manifest.json", "README.md"}
    assert {"model.safetensors", "config.json", "labels.json", "metrics.json"} <= set(records)
    for name, record in records.items():
        data = (folder / name).read_bytes()
        assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    verify_files(folder, manifest_of(folder), hashes=True)


def test_manifest_names_the_published_class(tiny_bert, published):
    # The tiny encoder was saved as a BertModel; what is published is the token classifier.
    assert read_json(Path(tiny_bert) / "config.json")["architectures"] == ["BertModel"]
    assert manifest_of(published["teacher"])["architecture"] == "BertForTokenClassification"


def test_hashing_reads_in_chunks(published, monkeypatch):
    folder = published["teacher"]
    monkeypatch.setattr(artifacts, "HASH_CHUNK", 7)  # many chunks, a ragged last one
    assert file_records(folder) == manifest_of(folder)["files"]


def test_truncated_weights_name_the_file_and_the_rebuild_command(student):
    weights = student / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ArtifactError) as caught:
        verify_files(student, manifest_of(student))
    message = str(caught.value)
    assert "\n" not in message
    assert str(weights) in message
    assert f"size {size // 2} bytes instead of {size}" in message
    assert "make distill ARGS=--fresh" in message
    # The distill and quantize stages load their sources through load_stage_model: the same
    # line, not a safetensors traceback.
    with pytest.raises(ArtifactError, match="model.safetensors has size"):
        load_stage_model(student, "student", "make distill")


def test_teacher_rebuild_command(published, tmp_path):
    teacher = Path(shutil.copytree(published["teacher"], tmp_path / "teacher"))
    (teacher / "labels.json").write_text("[]")
    with pytest.raises(ArtifactError, match=r"labels\.json has size .*`make teacher ARGS=--fresh`"):
        load_stage_model(teacher, "teacher", "make teacher")


def test_flipped_byte_passes_sizes_and_fails_hashes(student):
    weights = student / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    verify_files(student, manifest_of(student))  # same size: the cheap check cannot tell
    with pytest.raises(ArtifactError) as caught:
        verify_files(student, manifest_of(student), hashes=True)
    message = str(caught.value)
    assert "\n" not in message
    assert str(weights) in message and "SHA-256 mismatch" in message
    assert "make distill ARGS=--fresh" in message


def test_missing_file(student):
    (student / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"tokenizer\.json is missing; rebuild with "
                                            r"`make distill ARGS=--fresh`"):
        verify_files(student, manifest_of(student))


def test_manifest_without_records_passes(student):
    """Folders published before file records existed load as before."""
    manifest = manifest_of(student)
    del manifest["files"]
    write_json_atomic(student / "manifest.json", manifest)
    with open(student / "metrics.json", "a", encoding="utf-8") as f:
        f.write(" ")  # not recorded, so not checked
    verify_files(student, manifest, hashes=True)
    assert load_stage_model(student, "student", "make distill")[3]["stage"] == "student"


def test_edited_model_card_does_not_fail_verification(student):
    with open(student / "README.md", "a", encoding="utf-8") as f:
        f.write("\nEdited on the hub.\n")
    verify_files(student, manifest_of(student), hashes=True)


def test_published_folders_carry_a_model_card(published):
    for stage, folder in published.items():
        card = (folder / "README.md").read_text(encoding="utf-8")
        assert card.startswith("---\n")
        assert f'edge-ner predict {folder} "' in card
        assert "| **overall** | 50.00 | 25.00 |" in card
        assert "pip install 'edge-ner[train]'" in card, stage


def test_quantized_publish_records_files_and_writes_a_card(tiny_parts, published, tmp_path):
    from quantize import build
    from quantize.config import QuantizeConfig

    model, tokenizer = tiny_parts
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"planted model bytes" * 100)
    source = build.Source(
        "S1", published["student"], model, tokenizer, LABELS,
        {**manifest_of(published["student"]), "dataset": {"name": "conll2003", "source": "x"}},
        SimpleNamespace(settings=lambda: {**ENCODING, "case_features": True}), tmp_path)
    built = build.Built({"model.onnx": onnx_file}, "onnxruntime", "fp32", runtime=None,
                        details={"graph": "exported"})
    scores = {"f1": 0.4, "per_type": {"PER": {"f1": 0.4}}}
    out = tmp_path / "quantized" / "S1-onnx-fp32"
    manifest = build.publish(out, built, source, QuantizeConfig(), "id", scores, scores,
                             reference=0.4, min_f1=0.39, seconds=1.0)
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["bytes"] == onnx_file.stat().st_size
    assert "tokenizer.json" in manifest["files"] and "labels.json" in manifest["files"]
    verify_files(out, manifest, hashes=True)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "pip install edge-ner\n" in card and f"edge-ner info {out}" in card
    assert "| **overall** | 40.00 | 40.00 |" in card and "conll2003" in card
    assert "plain transformers pipeline" in card  # the planted encoder has case features
    (out / "model.onnx").write_bytes(b"short")
    with pytest.raises(ArtifactError, match=r"model\.onnx has size 5 bytes .*"
                                            r"`make quantize ARGS=--fresh`"):
        verify_files(out, manifest)
