"""The Predictor: raw text to entities from each CPU artifact kind (Hugging Face PyTorch, ONNX
FP32, ONNX INT8), character offsets, long texts and clear errors (the command: test_cli).
The neural-compressor kind is covered in test_inc_quant (it shares that module's build)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

from edgener.predictor import Entity, load_predictor, open_predictor
from edgener.runtime.artifacts import ArtifactError, write_json_atomic
from edgener.runtime.encoding import Encoder
from edgener.runtime.predictor import entities
from edgener.runtime.tags import split_tag
from edgener.runtime.text import split_words
from edgener.training.publish import make_manifest, publish_model
from quantize import ort_quant
from quantize.onnx_export import export_onnx

LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
KINDS = ("pytorch", "onnx-fp32", "onnx-int8")
TEXTS = [
    "Zoë Ångström flew from Köln to 東京 😀 with Bob O'Neil, e.g. on 1996-08-22.",
    "The U.S. team met Maria Lopez of Northwind Traders in New York on Tuesday.",
    "Contoso and Fabrikam signed in São Paulo; the 3M deal (worth $1,000.5) closed.",
]


@pytest.fixture(scope="module")
def artifacts(tiny_bert: Path, tmp_path_factory) -> dict[str, Path]:
    """One tiny random classifier published as each CPU artifact kind. Weights at 10x BERT's
    usual scale give sharp, varied tags, so texts yield entities of several types."""
    root = tmp_path_factory.mktemp("artifacts")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    config = BertConfig.from_pretrained(tiny_bert, num_labels=len(LABELS), initializer_range=0.2)
    torch.manual_seed(0)
    model = BertForTokenClassification(config).eval()
    # A 16-token window: every text here spans several overlapping windows.
    encoder = Encoder.from_transformers(
        tokenizer, LABELS, max_length=16, window_overlap=4, case_features=False)
    fields = {"encoding": encoder.settings(), "labels": LABELS}
    folders = {"pytorch": root / "student"}
    publish_model(folders["pytorch"], model, tokenizer, LABELS, {}, {},
                  make_manifest("student", **fields))
    export_onnx(model, root / "plain.onnx", opset=17)
    ort_quant.quantize_dynamic_int8(root / "plain.onnx", root / "int8.onnx")
    for kind, path, precision in (("onnx-fp32", root / "plain.onnx", "fp32"),
                                  ("onnx-int8", root / "int8.onnx", "int8")):
        folder = folders[kind] = root / kind
        folder.mkdir()
        path.rename(folder / "model.onnx")
        tokenizer.save_pretrained(folder)
        write_json_atomic(folder / "labels.json", LABELS)
        write_json_atomic(folder / "manifest.json", make_manifest(
            "quantized", backend="onnxruntime", precision=precision, **fields))
    return folders


def is_valid_iob2(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "I" and split_tag(previous)[1] != kind:
            return False
        previous = tag
    return True


@pytest.mark.parametrize("kind", KINDS)
def test_offsets_point_at_the_words_of_the_input(artifacts, kind):
    predictor = load_predictor(artifacts[kind], threads=1)
    found = predictor.predict_batch(TEXTS)
    assert sum(len(f) for f in found) >= 3
    for text, text_entities in zip(TEXTS, found, strict=True):
        words = split_words(text)
        starts, ends = {w.start for w in words}, {w.end for w in words}
        for entity in text_entities:
            assert entity.text == text[entity.start: entity.end]
            assert entity.start in starts and entity.end in ends
            assert entity.type in {"LOC", "MISC", "ORG", "PER"}
            assert 0 < entity.score <= 1
    assert {e.type for f in found for e in f} != {found[0][0].type}  # varied, not constant


def test_onnx_export_predicts_the_same_entities_as_pytorch(artifacts):
    expected = load_predictor(artifacts["pytorch"], threads=1).predict_batch(TEXTS)
    actual = load_predictor(artifacts["onnx-fp32"], threads=1).predict_batch(TEXTS)
    assert [[(e.type, e.start, e.end) for e in f] for f in actual] == \
        [[(e.type, e.start, e.end) for e in f] for f in expected]


@pytest.mark.parametrize("kind", KINDS)
def test_long_text_tags_every_word_with_valid_iob2(artifacts, kind):
    text = " ".join(TEXTS * 100)  # about 22,000 characters, ~1,700 overlapping windows
    assert len(text) > 20_000
    predictor = load_predictor(artifacts[kind], threads=1)
    words = [w.text for w in split_words(text)]
    ((tags, probs),) = predictor.tag([words])
    assert len(tags) == len(words) == len(probs)
    assert is_valid_iob2(tags)
    found = predictor.predict(text)
    assert found and all(text[e.start: e.end] == e.text for e in found)


def test_empty_and_blank_texts_give_no_entities(artifacts):
    predictor = load_predictor(artifacts["onnx-int8"], threads=1)
    assert predictor.predict("") == []
    assert predictor.predict("   \t ") == []
    results = predictor.predict_batch(["", TEXTS[0], ""])
    assert results[0] == [] and results[2] == [] and len(results) == 3


def test_entities_from_hand_written_tags():
    text = "Angela Merkel visited Köln 😀 today"
    tags = ["B-PER", "I-PER", "O", "B-LOC", "O", "O"]
    probs = np.array([0.9, 0.7, 0.99, 0.6, 0.9, 0.9])
    assert entities(text, split_words(text), tags, probs) == [
        Entity("PER", "Angela Merkel", 0, 13, 0.8), Entity("LOC", "Köln", 22, 26, 0.6)]


def test_artifact_is_loaded_once_per_process(artifacts):
    first = load_predictor(artifacts["onnx-fp32"], threads=1)
    assert load_predictor(str(artifacts["onnx-fp32"]), threads=1) is first
    assert load_predictor(artifacts["onnx-fp32"], threads=2) is not first


def test_missing_and_corrupt_artifacts_are_clear_errors(artifacts, tmp_path):
    with pytest.raises(ArtifactError, match="not a folder"):
        open_predictor(tmp_path / "absent")
    with pytest.raises(ArtifactError, match="manifest.json missing"):
        open_predictor(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        open_predictor(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("manifest.json", "labels.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((artifacts["onnx-fp32"] / name).read_bytes())
    with pytest.raises(ArtifactError, match="lacks model.onnx"):
        open_predictor(broken)
    (broken / "model.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load"):
        open_predictor(broken)
