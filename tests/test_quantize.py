"""Quantize stage: FP32 export parity, QDQ structure, calibration data, budget verdicts, and the
stage end to end on a tiny teacher trained on a CoNLL-2003 slice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

from edgener.backends.torch_eager import TorchBackend
from edgener.predictor import open_predictor
from edgener.runtime.backend import OnnxBackend
from edgener.runtime.conll import Sentence
from edgener.runtime.encoding import Encoder, pad_arrays
from edgener.runtime.inference import score, word_logits
from edgener.runtime.tags import split_tag
from edgener.training.datasets import load_dataset, recorded_dataset
from quantize import ort_quant
from quantize.config import QuantizeConfig
from quantize.onnx_export import compare, export_onnx
from quantize.source import Source, calibration_reader
from tests.conftest import run_module
from tests.test_teacher import tiny_args

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TRAIN_WORDS = [["Alice", "lives", "in", "Paris", "."], ["Bob", "visited", "New", "York", "today"],
               ["the", "cat", "sat", "on", "the", "mat", "in", "Rome"]] * 4
TRAIN = [Sentence(words, ["O"] * len(words)) for words in TRAIN_WORDS]
CPU_VARIANTS = "variants=[onnx-fp32,ort-fp32,ort-int8-dynamic,ort-int8-static,trt-fp16]"


@pytest.fixture(scope="module")
def tiny_classifier(tiny_bert) -> tuple[BertForTokenClassification, Encoder]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    config = BertConfig.from_pretrained(tiny_bert, num_labels=len(LABELS))
    torch.manual_seed(0)
    model = BertForTokenClassification(config).eval()
    return model, Encoder.from_transformers(tokenizer, LABELS, max_length=16, window_overlap=4,
                                            case_features=False)


@pytest.fixture(scope="module")
def exported(tiny_classifier, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(tiny_classifier[0], path, opset=17)
    return path


@pytest.fixture(scope="module")
def static_qdq(exported, tiny_classifier) -> Path:
    reader = ort_quant.CalibrationReader(tiny_classifier[1], TRAIN, max_tokens=64)
    target = exported.with_name("static.onnx")
    ort_quant.quantize_static_qdq(exported, target, reader, "minmax", quantize_embeddings=True)
    return target


def test_fp32_export_matches_pytorch(tiny_classifier, exported):
    model, encoder = tiny_classifier
    # A long sentence too, so that windows with padding and overlap are compared.
    sentences = [*TRAIN_WORDS[:3], ["word"] * 40]
    parity = compare(TorchBackend(model), OnnxBackend(exported), encoder, sentences, LABELS, 4)
    assert parity.sentences == 4
    assert parity.max_abs_diff <= 1e-4
    assert parity.tag_mismatches == 0
    assert parity.ok(1e-4)
    assert not parity.ok(-1.0)


def activation_zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return [initializers[n.input[2]] for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in initializers]


def test_every_static_matmul_has_symmetric_int8_per_channel_weights(static_qdq):
    model = onnx.load(str(static_qdq))
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    weighted = [n for n in matmuls if n.input[1] in producers
                and producers[n.input[1]].op_type == "DequantizeLinear"
                and producers[n.input[1]].input[0] in initializers]
    # Two layers of six weight matrices, plus the classifier.
    assert len(weighted) == 13
    for node in weighted:
        dequantize = producers[node.input[1]]
        weight = initializers[dequantize.input[0]]
        scale = initializers[dequantize.input[1]]
        zero_point = initializers[dequantize.input[2]]
        assert weight.dtype == np.int8, node.name
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        assert scale.shape == (weight.shape[1],), node.name  # one scale per output channel
    # Activations for ONNX Runtime on x86: uint8 with a zero point (u8 x s8 kernels).
    zero_points = activation_zero_points(model)
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points)
    assert ort_quant.float_ops(static_qdq) == {}


def test_tensorrt_form_has_symmetric_int8_activations(exported, tiny_classifier, tmp_path):
    reader = ort_quant.CalibrationReader(tiny_classifier[1], TRAIN, max_tokens=64)
    target = tmp_path / "static.onnx"
    ort_quant.quantize_static_qdq(exported, target, reader, "minmax", quantize_embeddings=False,
                                  symmetric_activations=True)
    zero_points = activation_zero_points(onnx.load(str(target)))
    assert zero_points
    for zero_point in zero_points:
        assert zero_point.dtype == np.int8 and not zero_point.any()


def test_embedding_tables_are_gathered_before_they_are_dequantized(static_qdq):
    model = onnx.load(str(static_qdq))
    initializers = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    tables = [n for n in model.graph.node if n.op_type == "Gather"
              and n.input[0] in initializers and len(initializers[n.input[0]].dims) == 2]
    assert len(tables) == 3  # word, position and token type embeddings
    for gather in tables:  # rows of the 8-bit table, dequantized after the lookup
        assert initializers[gather.input[0]].data_type in (onnx.TensorProto.INT8,
                                                            onnx.TensorProto.UINT8)
        consumers = [n for n in model.graph.node if gather.output[0] in n.input]
        assert [n.op_type for n in consumers] == ["DequantizeLinear"]
    assert not any(producers.get(n.input[0]) is not None and
                   producers[n.input[0]].op_type == "DequantizeLinear"
                   for n in model.graph.node if n.op_type == "Gather")
    onnx.checker.check_model(model)  # nodes still in topological order


def test_gather_rewrite_gives_the_same_values():
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    table = rng.integers(-127, 128, (10, 4), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["table", "scale", "zero"], ["dequantized"]),
         helper.make_node("Gather", ["dequantized", "ids"], ["rows"]),
         helper.make_node("Relu", ["rows"], ["out"])],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(table, "table"),
         numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
         numpy_helper.from_array(np.array(0, np.int8), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ids = np.array([3, 0, 9, 3])
    before = ort_run(model, ids)
    assert ort_quant.gather_before_dequantize(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Gather", "DequantizeLinear", "Relu"]
    np.testing.assert_array_equal(ort_run(model, ids), before)
    np.testing.assert_array_equal(before, np.maximum(table[ids] * np.float32(0.05), 0))


def ort_run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": ids})[0]


def test_embeddings_stay_fp32_when_asked(exported, tiny_classifier, tmp_path):
    reader = ort_quant.CalibrationReader(tiny_classifier[1], TRAIN, max_tokens=64)
    target = tmp_path / "static.onnx"
    ort_quant.quantize_static_qdq(exported, target, reader, "minmax", quantize_embeddings=False)
    assert ort_quant.float_ops(target) == {"Gather": 3}  # word, position, token type tables
    # 13 MatMuls on weights and 2 attention products a layer.
    assert ort_quant.float_ops(exported) == {"Gather": 3, "MatMul": 17}


def test_static_model_is_smaller_and_decodes_valid_tags(static_qdq, exported, tiny_classifier):
    _, encoder = tiny_classifier
    fp32 = word_logits(OnnxBackend(exported), encoder, TRAIN_WORDS[:3], 4)
    int8 = word_logits(OnnxBackend(static_qdq), encoder, TRAIN_WORDS[:3], 4)
    from edgener.runtime.decoding import constrained_decode

    for reference, logits in zip(fp32, int8, strict=True):
        assert logits.shape == reference.shape
        # Random weights give small logits; int8 stays within a tenth of their spread.
        assert np.abs(logits - reference).max() < 0.1 * (np.ptp(reference) + 1e-6) + 0.05
        tags = constrained_decode(logits, LABELS)
        for previous, tag in zip(["O", *tags], tags, strict=False):
            prefix, kind = split_tag(tag)
            if prefix == "I":
                assert previous != "O" and split_tag(previous)[1] == kind
    assert static_qdq.stat().st_size < 0.5 * exported.stat().st_size


def test_calibration_reads_train_only(tiny_classifier):
    model, encoder = tiny_classifier

    def sentences(marker: str, n: int) -> list[Sentence]:
        return [Sentence([marker, "word"], ["O", "O"]) for _ in range(n)]

    splits = {"train": sentences("apple", 20), "valid": sentences("zebra", 5),
              "test": sentences("violin", 5)}
    source = Source("tiny", Path("."), model, None, LABELS, {}, encoder, Path("."))
    reader = calibration_reader(source, QuantizeConfig(calibration_sentences=8), splits)
    assert reader.sentences == 8
    seen = {int(i) for batch in reader.batches for i in batch["input_ids"].ravel()}
    token = {word: encoder.word_piecer.token_to_id(word)
             for word in ("apple", "zebra", "violin")}
    assert token["apple"] in seen
    assert token["zebra"] not in seen and token["violin"] not in seen


def test_node_groups_follow_encoder_layers():
    assert ort_quant.node_group("/bert/encoder/layer.3/attention/self/query/MatMul") == "layer.3"
    assert ort_quant.node_group("/bert/embeddings/word_embeddings/Gather") == "embeddings"
    assert ort_quant.node_group("/classifier/MatMul") == "head"


# End to end on a tiny teacher -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert, conll_dir) -> Path:
    workdir = tmp_path_factory.mktemp("quantize")
    # Enough steps for a valid F1 above zero (about 0.2), so that budgets can be missed.
    result = run_module("teacher", *tiny_args(tiny_bert, conll_dir, "q", "train_limit=400",
                                              "epochs=3", "lr=3e-3", "threads=1"), cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir


def quantize_args(conll_dir: Path, *extra: str) -> list[str]:
    return ["run=q", f"data_dir={conll_dir.parent}", "eval_limit=60",
            "calibration_sentences=32", "threads=1", *extra]


@pytest.mark.slow
def test_stage_builds_and_judges_cpu_artifacts(tiny_run, conll_dir):
    result = run_module("quantize", *quantize_args(conll_dir, CPU_VARIANTS), cwd=tiny_run)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if not torch.cuda.is_available():
        assert "skipping trt-fp16: no CUDA device" in result.stdout
    out = tiny_run / "runs" / "q" / "quantized"
    manifests = {p.name: json.loads((p / "manifest.json").read_text()) for p in out.iterdir()
                 if (p / "manifest.json").is_file()}
    assert sorted(manifests) == ["teacher-onnx-fp32", "teacher-ort-fp32",
                                 "teacher-ort-int8-dynamic", "teacher-ort-int8-static"]
    reference = manifests["teacher-onnx-fp32"]["valid_f1"]
    # The stage scored the first 60 valid sentences (eval_limit=60) of the teacher's data.
    teacher = json.loads((tiny_run / "runs/q/teacher/manifest.json").read_text())
    valid = load_dataset(recorded_dataset(teacher), str(conll_dir.parent)).split("valid")[:60]
    for name, manifest in manifests.items():
        for key in ("backend", "precision", "valid_f1", "reference_valid_f1", "size_mb",
                    "within_budget", "source"):
            assert key in manifest, (name, key)
        assert manifest["reference_valid_f1"] == reference
        assert (out / name / "model.onnx").is_file() and (out / name / "labels.json").is_file()
        # The recorded F1 is what the published model.onnx gives through ONNX Runtime,
        # scored again here from the folder alone.
        predictor = open_predictor(out / name, threads=1)
        rescored = score(predictor.backend, predictor.encoder, [s.words for s in valid],
                         [s.tags for s in valid], predictor.labels)
        assert rescored["f1"] == pytest.approx(manifest["valid_f1"], abs=1e-9), name
    static = manifests["teacher-ort-int8-static"]
    assert static["calibration"] == {"method": "minmax", "sentences": 32, "split": "train"}
    assert static["size_mb"] < 0.5 * manifests["teacher-onnx-fp32"]["size_mb"]
    assert manifests["teacher-ort-fp32"]["fused_ops"]["Attention"] == 2
    assert manifests["teacher-onnx-fp32"]["parity"]["max_abs_logit_diff"] <= 1e-4
    for name in manifests:
        assert name in result.stdout
        # The card says how fast it ran where it was built, from the manifest's timing.
        timing = manifests[name]["latency"]
        assert 0 < timing["p50_ms"] <= timing["p90_ms"] and timing["sentences"] > 0
        card = (out / name / "README.md").read_text(encoding="utf-8")
        assert f"p50 {timing['p50_ms']} ms" in card


# Texts of very different lengths, so that in a batch each is padded beside the others: one
# over several windows, one word, none, non-ASCII, and middling ones.
PLANTED_TEXTS = [
    " ".join(["Alice", "met", "Bob", "in", "Paris", "on", "Monday", "."] * 40),
    "Rome",
    "",
    "Zoë Müller flew from São Paulo to Kraków .",
    "the cat sat on the mat in New York today",
    "Bob",
    "Alice lives in Paris . " * 6,
]


def entity_rows(found) -> list[tuple]:
    return [(e.type, e.start, e.end) for e in found], [e.score for e in found]


@pytest.mark.slow
def test_every_onnx_artifact_gives_a_text_the_same_entities_alone_and_in_any_batch(
        tiny_run, conll_dir):
    """Batch invariance, end to end through the runtime, for every ONNX variant the stage
    built (run by the test above): the planted texts one at a time, then in batches that
    pad them beside very different lengths, in several orders; and the stage's own
    measurement in each manifest says the same. The same check on the dynamic INT8 built
    the old way (one activation scale for the whole batch) must see a difference, or it
    could not fail."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgener.runtime.inference import batch_invariance

    out = tiny_run / "runs" / "q" / "quantized"
    folders = sorted(p for p in out.iterdir() if (p / "model.onnx").is_file())
    assert [p.name for p in folders] == ["teacher-onnx-fp32", "teacher-ort-fp32",
                                         "teacher-ort-int8-dynamic", "teacher-ort-int8-static"]
    orders = [PLANTED_TEXTS, PLANTED_TEXTS[::-1], PLANTED_TEXTS[1::2] + PLANTED_TEXTS[::2]]
    for folder in folders:
        predictor = open_predictor(folder, threads=1, max_batch_tokens=512)
        alone = {text: entity_rows(predictor.predict(text)) for text in PLANTED_TEXTS}
        assert any(alone[text][0] for text in PLANTED_TEXTS), folder.name  # something to see
        for texts in orders:
            for text, found in zip(texts, predictor.predict_batch(texts), strict=True):
                spans, scores = entity_rows(found)
                assert spans == alone[text][0], (folder.name, text[:30])
                np.testing.assert_allclose(scores, alone[text][1], atol=1e-3)
        measured = json.loads((folder / "manifest.json").read_text())["batch_invariance"]
        assert measured["invariant"] and measured["windows"] > 0, folder.name
        assert predictor.batch_invariant

    old_way = tiny_run / "old-way-dynamic.onnx"
    quantize_dynamic(out / "teacher-ort-fp32" / "model.onnx", old_way,
                     weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    dynamic = open_predictor(out / "teacher-ort-int8-dynamic", threads=1)
    sentences = [text.split() for text in PLANTED_TEXTS if text] * 3
    check = batch_invariance(OnnxBackend(old_way, 1), dynamic.encoder, sentences, 512)
    assert not check["invariant"] and check["max_probability_diff"] > 1e-3
    # One window alone is quantized exactly as before: the same graph runs it.
    old_backend = OnnxBackend(old_way, 1)
    for window in dynamic.encoder.encode_all(sentences[:6]):
        batch = pad_arrays([window], dynamic.encoder.pad_id)
        np.testing.assert_array_equal(dynamic.backend(batch), old_backend(batch))


@pytest.mark.slow
def test_rerun_builds_nothing_and_skips_the_export(tiny_run, conll_dir, monkeypatch, capsys):
    from quantize import build

    monkeypatch.chdir(tiny_run)
    args = quantize_args(conll_dir, "runs_dir=runs")
    assert build.main([*args, "variants=[onnx-fp32,ort-int8-dynamic]"]) == 0
    folder = tiny_run / "runs/q/quantized/teacher-ort-int8-dynamic"
    before = (folder / "manifest.json").read_text()

    def no_export(*_args, **_kwargs):
        raise AssertionError("an up-to-date model was exported again")

    monkeypatch.setattr(build, "export_onnx", no_export)
    capsys.readouterr()
    # A narrower variant list rebuilds nothing either.
    assert build.main([*args, "variants=[ort-int8-dynamic]"]) == 0
    assert "teacher-ort-int8-dynamic: up to date" in capsys.readouterr().out
    assert (folder / "manifest.json").read_text() == before


@pytest.mark.slow
def test_a_failing_variant_is_recorded_and_every_other_artifact_is_built(
        tiny_run, conll_dir, monkeypatch, capsys, tmp_path):
    """A planted error in one variant (what a TensorRT build error would be): the stage
    builds the variants around it, shows the failure in its summary, records it in the run,
    and exits 1."""
    from quantize import build

    workdir = tmp_path / "isolated"
    shutil.copytree(tiny_run / "runs" / "q" / "teacher", workdir / "runs" / "q" / "teacher")
    monkeypatch.chdir(workdir)
    real = build.build_variant

    def planted(variant, *args, **kwargs):
        if variant == "ort-fp32":
            raise RuntimeError("planted engine build error\nwith a second line")
        return real(variant, *args, **kwargs)

    monkeypatch.setattr(build, "build_variant", planted)
    code = build.main([*quantize_args(conll_dir, "runs_dir=runs"),
                       "variants=[onnx-fp32,ort-fp32,ort-int8-dynamic]"])
    out = capsys.readouterr().out
    assert code == 1
    quantized = workdir / "runs" / "q" / "quantized"
    built = sorted(p.name for p in quantized.iterdir() if (p / "manifest.json").is_file())
    assert built == ["teacher-onnx-fp32", "teacher-ort-int8-dynamic"]
    failures = json.loads((quantized / "failures.json").read_text())
    assert failures == [{"name": "teacher-ort-fp32", "model": "teacher", "variant": "ort-fp32",
                         "failed": "RuntimeError: planted engine build error"}]
    assert "teacher-ort-fp32 failed" in out and "1 variant(s) failed" in out
    assert "with a second line" not in out


@pytest.mark.slow
def test_artifact_over_budget_is_reported_and_kept(tiny_run, conll_dir, monkeypatch, capsys):
    """A planted artifact that tags every word O misses the budget; the summary says so."""
    from quantize import build

    real_build = build.build_variant
    labels = json.loads((tiny_run / "runs/q/teacher/labels.json").read_text())

    def only_o(batch):
        logits = np.zeros((*batch["input_ids"].shape, len(labels)), np.float32)
        logits[..., labels.index("O")] = 10.0
        return logits

    def planted(variant, *args, **kwargs):
        built = real_build(variant, *args, **kwargs)
        if variant == "ort-int8-dynamic":
            built.runtime = only_o
        return built

    monkeypatch.chdir(tiny_run)
    monkeypatch.setattr(build, "build_variant", planted)
    assert build.main([*quantize_args(conll_dir, "variants=[onnx-fp32,ort-int8-dynamic]",
                                      "run=q", "runs_dir=runs"), "--fresh"]) == 0
    out = capsys.readouterr().out
    assert "OVER BUDGET" in out and "1 artifact(s) over budget: teacher-ort-int8-dynamic" in out
    manifest = json.loads((tiny_run / "runs/q/quantized/teacher-ort-int8-dynamic/manifest.json")
                          .read_text())
    assert manifest["within_budget"] is False
    assert manifest["valid_f1"] == 0.0 < manifest["reference_valid_f1"]


@pytest.mark.slow
def test_sensitivity_fallback_keeps_layers_in_fp32(tiny_run, conll_dir):
    """An impossible budget for the static path sends every group back to FP32, most
    sensitive first, records which, and labels the result FP32."""
    result = run_module("quantize", *quantize_args(conll_dir, "variants=[ort-int8-static]",
                                                   "static_max_f1_drop=-1.0"), cwd=tiny_run)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((tiny_run / "runs/q/quantized/teacher-ort-int8-static/manifest.json")
                          .read_text())
    fallback = manifest["fallback"]
    groups = {"embeddings", "layer.0", "layer.1", "head"}
    assert set(fallback["sensitivity"]) == groups
    assert set(fallback["fp32_groups"]) == groups
    sensitivities = [fallback["sensitivity"][g] for g in fallback["fp32_groups"]]
    assert sensitivities == sorted(sensitivities, reverse=True)
    assert manifest["fp32_ops"] == {"Gather": 3, "MatMul": 17}
    assert manifest["precision"] == "fp32"  # nothing INT8 is left, and the label says so
    assert manifest["quantized_groups"] == []
    assert "all groups kept in FP32: published as FP32" in result.stdout


@pytest.mark.slow
def test_failed_parity_stops_the_stage(tiny_run, conll_dir):
    result = run_module("quantize", *quantize_args(conll_dir, "variants=[onnx-fp32]",
                                                   "parity_atol=-1", "run=q"), cwd=tiny_run)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "does not match PyTorch" in result.stderr and "max |logit difference|" in result.stderr


def test_missing_teacher_says_which_command(tmp_path):
    result = run_module("quantize", "run=none", cwd=tmp_path)
    assert result.returncode == 1
    assert "make teacher" in result.stderr and "Traceback" not in result.stderr


# What a static artifact really is ---------------------------------------------------------


def test_quantized_groups_are_read_from_the_graph(static_qdq, exported, tiny_classifier,
                                                  tmp_path):
    assert ort_quant.quantized_groups(static_qdq) == ["embeddings", "head", "layer.0",
                                                      "layer.1"]
    assert ort_quant.quantized_groups(exported) == []
    reader = ort_quant.CalibrationReader(tiny_classifier[1], TRAIN, max_tokens=64)
    layer_1 = [n.name for n in ort_quant.quantizable_nodes(exported, True)
               if ort_quant.node_group(n.name) == "layer.1"]
    target = tmp_path / "partial.onnx"
    ort_quant.quantize_static_qdq(exported, target, reader, "minmax", True, exclude=layer_1)
    assert ort_quant.quantized_groups(target) == ["embeddings", "head", "layer.0"]


def test_static_with_every_group_back_in_fp32_is_published_as_fp32(
        exported, tiny_classifier, tmp_path, capsys):
    """A budget no model meets (above the reference F1) sends every group back to FP32:
    the result is an FP32 model and is labelled so, in the manifest and in the summary."""
    from quantize import build

    model, encoder = tiny_classifier
    sentences = [Sentence(words, ["O"] * len(words)) for words in TRAIN_WORDS]
    splits = {"train": sentences, "valid": sentences[:4], "test": sentences[:4]}
    source = Source("teacher", Path("."), model, None, LABELS, {}, encoder, tmp_path)
    config = QuantizeConfig(calibration_sentences=8, threads=1, eval_batch_tokens=64)
    built = build.build_static(source, config, exported, splits, reference=1.0)
    fallback = built.details["fallback"]
    assert set(fallback["fp32_groups"]) == {"embeddings", "layer.0", "layer.1", "head"}
    assert built.precision == "fp32"
    assert built.details["quantized_groups"] == []
    assert "all groups kept in FP32: published as FP32" in capsys.readouterr().out

    row = {"name": "teacher-ort-int8-static", "size_mb": 0.5, "valid_f1": 0.0,
           "f1_change": -1.0, "within_budget": False, "precision": built.precision,
           **built.details}
    dynamic = {**row, "name": "teacher-ort-int8-dynamic", "precision": "int8", "fallback": {}}
    build.print_summary([row, dynamic], tmp_path)
    out = capsys.readouterr().out
    assert "teacher-ort-int8-static: all groups kept in FP32: published as FP32" in out
    assert "teacher-ort-int8-dynamic:" not in out


def test_summary_says_which_groups_a_partial_fallback_kept():
    from quantize.build import precision_note

    row = {"name": "L3-ort-int8-static", "precision": "int8", "quantization": "static QDQ",
           "fallback": {"fp32_groups": ["layer.0", "embeddings"],
                        "sensitivity": {g: 0.1 for g in ("embeddings", "layer.0", "layer.1",
                                                         "layer.2", "head")}}}
    assert precision_note(row) == ("L3-ort-int8-static: layer.0, embeddings kept in FP32 "
                                   "(2 of 5 groups), the rest INT8")
    assert precision_note({"name": "x", "precision": "int8", "quantization": "dynamic"}) is None
    assert precision_note({"name": "x", "precision": "fp32", "graph": "fused"}) is None
