"""TensorRT variants. The CPU-side pieces (shape profiles, the dynamic torch.export, the QDQ
model, the availability check) run everywhere; building and running engines needs CUDA,
TensorRT and Torch-TensorRT, and those tests skip with tensorrt_available()'s reason."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

from edgener.artifacts import ArtifactError
from edgener.backends import ShapeProfile
from edgener.config import ConfigError
from edgener.data import Sentence
from edgener.encoding import Encoder, pad_arrays
from edgener.runtime import MODEL_INPUTS, Backend, OnnxBackend
from edgener.torch_backends import ProfiledBackend, TorchBackend, torch_dtype
from quantize import ort_quant, tensorrt_build
from quantize.build import Source
from quantize.config import QuantizeConfig
from quantize.onnx_export import export_onnx
from quantize.tensorrt_build import (
    build,
    compile_settings,
    export_program,
    quantize_for_tensorrt,
    shape_profile,
    tensorrt_available,
)

AVAILABLE, REASON = tensorrt_available()
needs_tensorrt = pytest.mark.skipif(not AVAILABLE, reason=REASON)

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
WINDOW = 32  # encoder window: long sentences split, so batches come in several lengths
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "Maria",
         "Lopez", "of", "Northwind", "Traders", "flies", "from", "Lisbon", "to", "Oslo", "on",
         "Tuesday", ",", "said", "the", "Reuters", "report", "about", "the", "merger", "talks",
         "between", "Contoso", "and", "Fabrikam", "in", "New", "York"]
# Made-up sentences of 3 to 40 words: calibration data and scoring batches.
SENTENCES = [[WORDS[(7 * i + j) % len(WORDS)] for j in range(3 + (11 * i) % 38)]
             for i in range(24)]


def config(**overrides) -> QuantizeConfig:
    return QuantizeConfig(**{"eval_batch_tokens": 64, "trt_max_batch": 8,
                             "calibration_sentences": 16, **overrides})


@pytest.fixture(scope="module")
def encoder(tiny_bert: Path) -> Encoder:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    return Encoder.from_transformers(tokenizer, LABELS, max_length=WINDOW, window_overlap=8,
                                     case_features=False)


@pytest.fixture(scope="module")
def classifier(tiny_bert: Path) -> torch.nn.Module:
    """The tiny BERT with a random 9-label head."""
    torch.manual_seed(0)
    return BertForTokenClassification.from_pretrained(tiny_bert, num_labels=len(LABELS)).eval()


@pytest.fixture(scope="module")
def sharp_classifier(tiny_bert: Path) -> torch.nn.Module:
    """The tiny BERT re-initialised with 10x larger weights. At BERT's usual 0.02 scale a
    random model's attention is so flat that ignoring the padding mask moves its logits by
    0.2% of their range, hardly more than FP16 rounding does, so an FP16 comparison could
    not tell a wrong mask. At 0.2, dropping the mask on `batches` moves them by 14-27% of
    their range, and PyTorch's own FP16 by at most 0.15%."""
    settings = BertConfig.from_pretrained(tiny_bert, num_labels=len(LABELS),
                                          initializer_range=0.2)
    torch.manual_seed(0)
    return BertForTokenClassification(settings).eval()


def batches(encoder: Encoder) -> list[dict[str, np.ndarray]]:
    """Two scoring batches of different shapes: the 3 shortest windows, and 10 windows of
    every length up to the full window (more than the profile's 8, so the backend runs them
    in two slices; much of the batch is padding, so the attention mask matters)."""
    windows = sorted(encoder.encode_all(SENTENCES), key=lambda w: len(w.input_ids))
    pad = encoder.pad_id
    spread = [windows[round(i * (len(windows) - 1) / 9)] for i in range(10)]
    short, mixed = pad_arrays(windows[:3], pad), pad_arrays(spread, pad)
    assert short["input_ids"].shape[1] < mixed["input_ids"].shape[1] == WINDOW
    return [short, mixed]


def make_source(model: torch.nn.Module, encoder: Encoder, folder: Path) -> Source:
    # The source's tokenizer is only saved into published folders, which these tests skip.
    return Source("tiny", folder, model, None, LABELS, {}, encoder,
                  folder / "work")


def train_split() -> dict[str, list[Sentence]]:
    return {"train": [Sentence(words, ["O"] * len(words)) for words in SENTENCES]}


# Shape profiles


def test_shape_profile_spans_one_token_to_the_configured_maximum():
    # 1,024 tokens a scoring batch: 16 rows of half the 128-token window.
    profile = shape_profile(config(trt_max_batch=64, eval_batch_tokens=1024), window_length=128)
    assert profile == ShapeProfile(min=(1, 1), opt=(16, 64), max=(64, 128))
    longer = shape_profile(config(trt_max_batch=64, eval_batch_tokens=1024, trt_max_length=256),
                           window_length=128, position_limit=512)
    assert longer.max == (64, 256) and longer.opt == (8, 128)
    # Scoring batches larger than the engine's maximum run in slices of the maximum.
    assert shape_profile(config(trt_max_batch=8, eval_batch_tokens=4096), 32).opt == (8, 16)
    assert profile.as_dict() == {"axes": ["batch", "sequence"], "min": [1, 1],
                                 "opt": [16, 64], "max": [64, 128]}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"trt_max_batch": 0}, "trt_max_batch"),
    ({"trt_max_length": 16}, "shorter than the encoder's 32-token windows"),
    ({"trt_max_length": 256}, "exceeds the model's 128 position embeddings"),
])
def test_shape_profile_rejects_shapes_the_engine_could_not_serve(overrides, message):
    with pytest.raises(ConfigError, match=message):
        shape_profile(config(**overrides), window_length=32, position_limit=128)


def test_example_shape_stays_off_size_one_on_dynamic_axes():
    assert ShapeProfile((1, 1), (1, 1), (8, 32)).example_shape() == (2, 2)
    assert ShapeProfile((1, 1), (4, 16), (8, 32)).example_shape() == (4, 16)
    assert ShapeProfile((1, 1), (1, 16), (1, 32)).example_shape() == (1, 16)  # static batch


# Small helpers


def test_compile_settings_keep_only_fields_the_installed_release_has():
    assert compile_settings(["use_explicit_typing", "min_block_size"]) == \
        {"use_explicit_typing": True}
    assert compile_settings(["attn_bias_is_causal", "use_explicit_typing"]) == \
        {"use_explicit_typing": True, "attn_bias_is_causal": False}
    assert compile_settings([]) == {}


def test_tensorrt_dtypes_map_to_torch():
    assert torch_dtype("FLOAT") is torch.float32
    assert torch_dtype("DataType.INT64") is torch.int64
    assert torch_dtype(SimpleNamespace(name="HALF")) is torch.float16
    with pytest.raises(TypeError, match="FP8"):
        torch_dtype("FP8")


class RecordingBackend(ProfiledBackend):
    """Returns each row's input_ids as its 'logits' and records the slices it was given."""

    def __init__(self, profile: ShapeProfile):
        super().__init__(profile)
        self.sizes: list[int] = []

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        assert set(batch) == set(MODEL_INPUTS)
        self.sizes.append(len(batch["input_ids"]))
        return batch["input_ids"][..., None].astype(np.float32)


def test_profiled_backend_runs_large_batches_in_slices_and_refuses_long_windows():
    backend = RecordingBackend(ShapeProfile((1, 1), (2, 4), (4, 8)))
    ids = np.arange(10 * 6, dtype=np.int64).reshape(10, 6)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}
    logits = backend(batch)
    assert backend.sizes == [4, 4, 2]
    np.testing.assert_array_equal(logits[..., 0], ids)
    too_long = {name: np.zeros((2, 9), np.int64) for name in MODEL_INPUTS}
    with pytest.raises(ValueError, match="maximum of 8 tokens"):
        backend(too_long)


# Availability


def test_tensorrt_availability_on_this_machine_is_one_line():
    assert isinstance(AVAILABLE, bool)
    assert REASON and "\n" not in REASON
    if not torch.cuda.is_available():
        assert not AVAILABLE and "CUDA" in REASON


def test_without_cuda_the_reason_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    available, reason = tensorrt_available()
    assert not available and "no CUDA device" in reason and "\n" not in reason


def test_without_the_packages_the_reason_says_how_to_install(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tensorrt_build.importlib.util, "find_spec", lambda name: None)
    available, reason = tensorrt_available()
    assert not available
    assert "tensorrt and torch_tensorrt are not installed" in reason
    assert "pip install" in reason and "\n" not in reason


@pytest.mark.parametrize("variant", ["trt-fp16", "trt-int8"])
def test_build_without_tensorrt_raises_with_the_reason(monkeypatch, tmp_path, variant):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, reason = tensorrt_available()
    # Nothing past the availability check is touched, so no model is needed.
    with pytest.raises(ArtifactError) as error:
        build(variant, None, config(), tmp_path / "model.onnx", {}, tmp_path)
    assert reason in str(error.value) and variant in str(error.value)


@pytest.mark.skipif(AVAILABLE, reason="TensorRT is usable here")
def test_build_on_this_machine_raises_with_the_reason(tmp_path):
    with pytest.raises(ArtifactError, match="CUDA|TensorRT|tensorrt"):
        build("trt-fp16", None, config(), tmp_path / "model.onnx", {}, tmp_path)


def test_build_rejects_other_variants(tmp_path):
    with pytest.raises(ValueError, match="not a TensorRT variant"):
        build("ort-fp32", None, config(), tmp_path / "model.onnx", {}, tmp_path)


# The CPU halves of the two builds


def test_exported_program_serves_every_shape_of_the_profile(classifier, encoder):
    profile = shape_profile(config(), WINDOW, classifier.config.max_position_embeddings)
    attention = classifier.config._attn_implementation
    module = export_program(classifier, profile).module()
    assert classifier.config._attn_implementation == attention  # the source is untouched
    reference = TorchBackend(classifier)
    for batch in batches(encoder):
        for start in range(0, len(batch["input_ids"]), profile.max[0]):
            part = {name: batch[name][start: start + profile.max[0]] for name in MODEL_INPUTS}
            with torch.no_grad():
                got = module(*(torch.from_numpy(part[name]).int() for name in MODEL_INPUTS))
            np.testing.assert_allclose(got.numpy(), reference(part), atol=1e-5)
    # The program guards its inputs against the profile's bounds.
    with torch.no_grad(), pytest.raises(AssertionError, match="<= 8"):
        module(*(torch.ones(profile.max[0] + 1, 4, dtype=torch.int32) for _ in MODEL_INPUTS))


def test_qdq_model_for_tensorrt_is_int8_on_every_matmul_and_agrees(
        classifier, encoder, tmp_path):
    plain = tmp_path / "model.onnx"
    export_onnx(classifier, plain, 17)
    source = make_source(classifier, encoder, tmp_path)
    target = tmp_path / "model.qdq.onnx"
    assert quantize_for_tensorrt(source, config(), plain, train_split(), target) == 16
    # Every weight MatMul reads int8 weights; only the embedding Gathers keep FP32 tables.
    assert set(ort_quant.float_ops(target)) == {"Gather"}
    reference, quantized = TorchBackend(classifier), OnnxBackend(target, threads=1)
    agree, total = label_agreement(reference, quantized, batches(encoder))
    assert agree / total >= 0.8


def label_agreement(reference: Backend, candidate: Backend,
                    scoring: list[dict]) -> tuple[int, int]:
    """Argmax labels that agree, and how many there are, over real (unpadded) tokens."""
    agree = total = 0
    for batch in scoring:
        real = batch["attention_mask"].astype(bool)
        same = reference(batch).argmax(-1) == candidate(batch).argmax(-1)
        agree, total = agree + int(same[real].sum()), total + int(real.sum())
    return agree, total


# Engines (CUDA, TensorRT and Torch-TensorRT)


def check_settings(details: dict, precision: str, profile: ShapeProfile) -> None:
    settings = details["tensorrt"]
    assert settings["precision"] == precision
    assert settings["shapes"] == profile.as_dict()
    assert settings["tensorrt_version"] and settings["torch_tensorrt_version"]


@needs_tensorrt
def test_fp16_engine_matches_pytorch_fp32_on_two_shapes(sharp_classifier, encoder, tmp_path):
    source = make_source(sharp_classifier, encoder, tmp_path)
    cfg = config()
    built = build("trt-fp16", source, cfg, tmp_path / "unused.onnx", train_split(),
                  source.work)
    assert built.files["model.ep"].is_file()
    assert (built.backend, built.precision) == ("torch-tensorrt", "fp16")
    check_settings(built.details, "fp16", shape_profile(cfg, WINDOW, 128))
    reference = TorchBackend(sharp_classifier)
    for batch in batches(encoder):
        expected, actual = reference(batch), built.runtime(batch)
        assert actual.shape == expected.shape
        real = batch["attention_mask"].astype(bool)
        # FP16 rounds at 2^-11 relative: PyTorch's own FP16 stays within 0.15% of the logit
        # range here, a dropped padding mask is off by 14% or more. 2% leaves room for
        # TensorRT's FP16 accumulation and fusions and still catches a wrong graph.
        error = np.abs(actual - expected)[real].max()
        assert error <= 0.02 * np.abs(expected[real]).max(), error


@needs_tensorrt
def test_int8_engine_mostly_agrees_with_pytorch_fp32_on_two_shapes(
        classifier, encoder, tmp_path):
    source = make_source(classifier, encoder, tmp_path)
    plain = tmp_path / "model.onnx"
    export_onnx(classifier, plain, 17)
    cfg = config()
    built = build("trt-int8", source, cfg, plain, train_split(), source.work)
    assert built.files["model.engine"].is_file()
    assert (built.backend, built.precision) == ("tensorrt", "int8")
    check_settings(built.details, "int8", shape_profile(cfg, WINDOW, 128))
    assert built.details["calibration"]["sentences"] == 16
    scoring = batches(encoder)
    for batch in scoring:
        assert built.runtime(batch).shape == (*batch["input_ids"].shape, len(LABELS))
    # A random head's logits for a token lie within ~0.35 of each other, so int8 rounding
    # flips near ties: ONNX Runtime running the same QDQ model on the CPU agrees on ~94%
    # of the labels.
    agree, total = label_agreement(TorchBackend(classifier), built.runtime, scoring)
    assert agree / total >= 0.8
