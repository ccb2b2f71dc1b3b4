"""TensorRT variants. The CPU-side pieces (shape profiles, the dynamic torch.export, the QDQ
model and its FP16 regions, the availability check, the engine's GPU binding, and the
engine backend driving a planted engine) run everywhere; building and running real engines
needs CUDA, TensorRT and Torch-TensorRT, and those tests skip with tensorrt_available()'s
reason."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

from edgener.backends.engines import ShapeProfile, build_engine, check_binding
from edgener.backends.tensorrt import ProfiledBackend, TensorRTEngineBackend, TorchTensorRTBackend
from edgener.backends.torch_eager import TorchBackend
from edgener.predictor import load_backend
from edgener.runtime.artifacts import ArtifactError, verify_files
from edgener.runtime.backend import MODEL_INPUTS, Backend, OnnxBackend
from edgener.runtime.conll import Sentence
from edgener.runtime.encoding import Encoder, pad_arrays
from edgener.training import publish
from edgener.training.config import ConfigError
from edgener.training.publish import rebuild_engine
from quantize import ort_quant, tensorrt_build
from quantize.config import QuantizeConfig
from quantize.onnx_export import export_onnx
from quantize.source import Source
from quantize.tensorrt_build import (
    build,
    export_program,
    fp16_regions,
    median_window_length,
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
    """The planted sentences as train (calibration) and valid (the median length)."""
    sentences = [Sentence(words, ["O"] * len(words)) for words in SENTENCES]
    return {"train": sentences, "valid": sentences}


# Shape profiles


def test_shape_profile_is_tuned_for_one_text_at_the_median_length():
    profile = shape_profile(config(trt_max_batch=64), window_length=128, median_length=23)
    assert profile == ShapeProfile(min=(1, 1), opt=(1, 23), max=(64, 128))
    longer = shape_profile(config(trt_max_batch=64, trt_max_length=256), window_length=128,
                           median_length=23, position_limit=512)
    assert longer.max == (64, 256) and longer.opt == (1, 23)
    # A service under load can tune for its batches instead.
    tuned = shape_profile(config(trt_max_batch=64, trt_opt_batch=16, trt_opt_length=64),
                          128, 23)
    assert tuned.opt == (16, 64)
    assert profile.as_dict() == {"axes": ["batch", "sequence"], "min": [1, 1],
                                 "opt": [1, 23], "max": [64, 128]}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"trt_max_batch": 0}, "trt_max_batch"),
    ({"trt_max_length": 16}, "shorter than the encoder's 32-token windows"),
    ({"trt_max_length": 256}, "exceeds the model's 128 position embeddings"),
    ({"trt_opt_batch": 9}, "must lie within the engine's shapes"),
    ({"trt_opt_length": 40}, "must lie within the engine's shapes"),
])
def test_shape_profile_rejects_shapes_the_engine_could_not_serve(overrides, message):
    with pytest.raises(ConfigError, match=message):
        shape_profile(config(**overrides), window_length=32, median_length=12,
                      position_limit=128)


def test_median_window_length_counts_the_encoders_tokens(classifier, encoder, tmp_path):
    source = make_source(classifier, encoder, tmp_path)
    sentences = train_split()["train"]
    lengths = sorted(len(w.input_ids) for w in encoder.encode_all([s.words for s in sentences]))
    # 24 sentences of 3 to 40 words in 32-token windows: some split, all lengths differ.
    assert lengths[0] < lengths[len(lengths) // 2] < lengths[-1] == WINDOW
    assert median_window_length(source, sentences) == round(np.median(lengths))


def test_example_shape_stays_off_size_one_on_dynamic_axes():
    assert ShapeProfile((1, 1), (1, 1), (8, 32)).example_shape() == (2, 2)
    assert ShapeProfile((1, 1), (4, 16), (8, 32)).example_shape() == (4, 16)
    assert ShapeProfile((1, 1), (1, 16), (1, 32)).example_shape() == (1, 16)  # static batch


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
        build(variant, None, config(), tmp_path / "model.onnx", {}, tmp_path, None, 0.0)
    assert reason in str(error.value) and variant in str(error.value)


@pytest.mark.skipif(AVAILABLE, reason="TensorRT is usable here")
def test_build_on_this_machine_raises_with_the_reason(tmp_path):
    with pytest.raises(ArtifactError, match="CUDA|TensorRT|tensorrt"):
        build("trt-fp16", None, config(), tmp_path / "model.onnx", {}, tmp_path, None, 0.0)


def test_build_rejects_other_variants(tmp_path):
    with pytest.raises(ValueError, match="not a TensorRT variant"):
        build("ort-fp32", None, config(), tmp_path / "model.onnx", {}, tmp_path, None, 0.0)


# The CPU halves of the two builds


def test_exported_program_serves_every_shape_of_the_profile(classifier, encoder):
    """The program trt-fp16 compiles, run on the CPU through the backend that serves the
    compiled one: int32 ids, batches over the profile's 8 rows in slices, batch 1 as is."""
    profile = shape_profile(config(), WINDOW, 12, classifier.config.max_position_embeddings)
    attention = classifier.config._attn_implementation
    module = export_program(classifier, profile).module()
    assert classifier.config._attn_implementation == attention  # the source is untouched
    backend = TorchTensorRTBackend(module, profile, device="cpu")
    reference = TorchBackend(classifier)
    short, mixed = batches(encoder)
    one = {name: short[name][:1] for name in MODEL_INPUTS}
    for batch in (one, short, mixed):  # 1 row, 3 rows, and 10 rows run as 8 + 2
        np.testing.assert_allclose(backend(batch), reference(batch), atol=1e-5)
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


# The FP16 regions of trt-int8


def test_fp16_regions_keep_the_int8_products_and_the_labels(classifier, encoder, tmp_path):
    """Every float weight and scale of the QDQ model in FP16, each DequantizeLinear giving
    FP16, the logits still FP32; ONNX Runtime runs it on the CPU and it keeps the labels of
    the same model with FP32 regions."""
    import onnx

    plain = tmp_path / "model.onnx"
    export_onnx(classifier, plain, 17)
    qdq, half = tmp_path / "fp32-regions.onnx", tmp_path / "model.qdq.onnx"
    quantize_for_tensorrt(make_source(classifier, encoder, tmp_path), config(), plain,
                          train_split(), qdq)
    fp16_regions(qdq, half)
    model = onnx.load(str(half))
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    kinds = {i.data_type for i in model.graph.initializer if i.data_type in floats}
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert ort_quant.float_ops(half) == ort_quant.float_ops(qdq)  # the same ops stay float
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19
    regions = OnnxBackend(qdq, threads=1)
    agree, total = label_agreement(regions, OnnxBackend(half, threads=1), batches(encoder))
    assert agree / total >= 0.95


# The engine backend and the engine's binding, on the CPU with a planted engine


class PlantedEngine:
    """TensorRT's engine API over host memory: int32 inputs, FP32 logits of
    `input_ids + 10 * attention_mask + 100 * token_type_ids` in each of 3 labels, read and
    written through the addresses the backend sets, as TensorRT reads device pointers."""

    names = [*MODEL_INPUTS, "logits"]

    def __init__(self):
        self.contexts = []

    num_io_tensors = 4

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return "TensorIOMode.OUTPUT" if name == "logits" else "TensorIOMode.INPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return "DataType.FLOAT" if name == "logits" else "DataType.INT32"

    def create_execution_context(self):
        self.contexts.append(PlantedContext())
        return self.contexts[-1]


class PlantedContext:
    def __init__(self):
        self.shapes, self.addresses, self.calls = {}, {}, []

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        self.shapes[name] = shape
        return shape[0] <= 4  # TensorRT refuses a shape outside its profile

    def set_tensor_address(self, name: str, address: int) -> None:
        self.addresses[name] = address

    def get_tensor_shape(self, name: str) -> tuple:
        return (*self.shapes["input_ids"], 3)

    def read(self, name: str, ctype, shape: tuple) -> np.ndarray:
        count = int(np.prod(shape))
        buffer = (ctype * count).from_address(self.addresses[name])
        return np.ctypeslib.as_array(buffer).reshape(shape)

    def execute_async_v3(self, stream: int) -> bool:
        shape = self.shapes["input_ids"]
        assert all(self.shapes[name] == shape for name in MODEL_INPUTS)
        ids, mask, types = (self.read(n, ctypes.c_int32, shape) for n in MODEL_INPUTS)
        out = self.read("logits", ctypes.c_float, (*shape, 3))
        out[...] = (ids + 10 * mask + 100 * types)[..., None]
        self.calls.append(shape)
        return True


def planted_batch(rows: int, length: int) -> dict[str, np.ndarray]:
    ids = np.arange(rows * length, dtype=np.int64).reshape(rows, length) + 1
    return {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "token_type_ids": (ids % 2).astype(np.int64)}


def test_engine_backend_runs_one_text_and_slices_large_batches():
    engine = PlantedEngine()
    backend = TensorRTEngineBackend(engine, ShapeProfile((1, 1), (1, 12), (4, 32)),
                                    device="cpu")
    one = planted_batch(1, 12)
    logits = backend(one)
    context = engine.contexts[0]
    assert context.calls == [(1, 12)]  # batch 1 goes to the engine as it is
    expected = one["input_ids"] + 10 + 100 * one["token_type_ids"]
    assert logits.shape == (1, 12, 3) and logits.dtype == np.float32
    np.testing.assert_array_equal(logits[..., 2], expected)
    ten = planted_batch(10, 20)
    np.testing.assert_array_equal(backend(ten)[..., 0],
                                  ten["input_ids"] + 10 + 100 * ten["token_type_ids"])
    assert context.calls[1:] == [(4, 20), (4, 20), (2, 20)]
    with pytest.raises(ValueError, match="maximum of 32 tokens"):
        backend(planted_batch(1, 33))
    # A shape the engine itself refuses is an error before anything runs.
    with pytest.raises(ValueError, match=r"does not accept input_ids of shape \(5, 4\)"):
        backend.enqueue(planted_batch(5, 4), 0)
    assert len(context.calls) == 4


FACTS = {"gpu": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0",
         "tensorrt_version": "10.3.0", "cuda_version": "12.6", "torch_version": "2.13.0"}


def test_an_engine_loads_only_where_it_was_built(tmp_path):
    folder = tmp_path / "L3-trt-int8"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"tensorrt": FACTS}))
    recorded = json.loads((folder / "manifest.json").read_text())["tensorrt"]
    check_binding(folder, "tensorrt", recorded, dict(FACTS))  # the same machine: loads
    orin = FACTS | {"gpu": "Orin", "compute_capability": "8.7"}
    with pytest.raises(ArtifactError) as error:
        check_binding(folder, "tensorrt", recorded, orin)
    message = str(error.value)
    assert "\n" not in message
    assert "NVIDIA A100-SXM4-80GB (compute 8.0) with TensorRT 10.3.0" in message
    assert "this is Orin (compute 8.7)" in message
    assert f"`edge-ner build-engine {folder}`" in message
    with pytest.raises(ArtifactError, match="TensorRT 10.7.0: rebuild it here"):
        check_binding(folder, "tensorrt", recorded, FACTS | {"tensorrt_version": "10.7.0"})
    # A Torch-TensorRT program has no QDQ source: the stage rebuilds it.
    with pytest.raises(ArtifactError, match=r"make quantize ARGS=\"--fresh variants=\[trt-fp16"):
        check_binding(folder, "torch-tensorrt", recorded, orin)


def planted_trt_folder(tmp_path: Path, backend: str = "tensorrt", source: bool = True) -> Path:
    folder = tmp_path / "L3-trt-int8"
    folder.mkdir()
    manifest = {"stage": "quantized", "backend": backend, "precision": "int8",
                "tensorrt": FACTS | {"shapes": ShapeProfile((1, 1), (1, 12), (4, 32)).as_dict()}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "model.engine").write_bytes(b"an engine for another GPU")
    (folder / "metrics.json").write_text(json.dumps({"valid": {"f1": 0.9}, "test": {"f1": 0.88}}))
    if source:
        (folder / "model.qdq.onnx").write_bytes(b"its source")
    return folder


def test_build_engine_republishes_the_folder_for_this_gpu(tmp_path, monkeypatch):
    """rebuild's bookkeeping with a planted builder (TensorRT is not here): the engine is
    replaced from the folder's source, the manifest names the new GPU, keeps where F1 and
    latency were measured across two rebuilds, and every file matches its new hash."""
    folder = planted_trt_folder(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest |= {"size_mb": 1.0, "latency": {"p50_ms": 0.4, "gpu": FACTS["gpu"]}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    built = []

    def planted_build(source: Path, engine: Path, profile: ShapeProfile) -> dict:
        built.append((source.read_bytes(), profile))
        engine.write_bytes(b"an engine for " + here["gpu"].encode())
        return {"input_ids": "INT32", "logits": "FLOAT"}

    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(publish, "build_engine", planted_build)
    monkeypatch.setattr(publish, "machine_facts", lambda: dict(here))
    for gpu in ("Orin", "NVIDIA L4"):
        here = FACTS | {"gpu": gpu, "compute_capability": "8.7"}
        rebuilt = rebuild_engine(folder)
        assert (folder / "model.engine").read_bytes() == b"an engine for " + gpu.encode()
        settings = rebuilt["tensorrt"]
        assert settings["gpu"] == gpu and settings["compute_capability"] == "8.7"
        # Where the F1 and latency in the folder were measured: the first build's GPU.
        assert settings["rebuilt"]["f1_measured_on"] == FACTS["gpu"]
        assert settings["rebuilt"]["first_build_latency"] == {"p50_ms": 0.4,
                                                              "gpu": FACTS["gpu"]}
        assert rebuilt["latency"] is None
        assert rebuilt["size_mb"] == round(len(b"an engine for " + gpu.encode()) / 2**20, 2)
        check_binding(folder, "tensorrt", settings, here)  # loads where it was rebuilt
        verify_files(folder, json.loads((folder / "manifest.json").read_text()), hashes=True)
        assert f"runs on {gpu}" in (folder / "README.md").read_text()
    assert built == [(b"its source", ShapeProfile((1, 1), (1, 12), (4, 32)))] * 2
    assert settings["rebuilt"]["was"]["gpu"] == "Orin"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["L3-trt-int8"]  # no leftovers


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_an_engine_folder_says_it_needs_a_gpu(tmp_path):
    folder = planted_trt_folder(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    with pytest.raises(ArtifactError, match="needs an NVIDIA GPU; this machine has no CUDA"):
        load_backend(folder, manifest)


@pytest.mark.parametrize(("backend", "source", "message"), [
    ("onnxruntime", True, "is a onnxruntime artifact; build-engine rebuilds TensorRT INT8"),
    ("tensorrt", False, "lacks model.qdq.onnx, the engine's source"),
])
def test_build_engine_refuses_folders_it_cannot_rebuild(tmp_path, backend, source, message):
    folder = planted_trt_folder(tmp_path, backend, source)
    with pytest.raises(ArtifactError, match=message):
        rebuild_engine(folder)
    assert (folder / "model.engine").read_bytes() == b"an engine for another GPU"


@pytest.mark.skipif(AVAILABLE, reason="TensorRT is usable here")
def test_build_engine_command_without_tensorrt_is_one_line(tmp_path):
    folder = planted_trt_folder(tmp_path)
    # The installed console script, as a user on the box runs it.
    command = [str(Path(sys.executable).parent / "edge-ner"), "build-engine", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "build-engine needs" in lines[0], result.stderr
    assert (folder / "model.engine").read_bytes() == b"an engine for another GPU"


# Engines (CUDA, TensorRT and Torch-TensorRT)


@needs_tensorrt
def test_build_engine_command_rebuilds_a_real_engine_for_this_gpu(classifier, encoder,
                                                                  tmp_path):
    """The installed console script, on a real QDQ source: the engine it writes loads here
    and gives the logits of the engine the quantize stage built from the same source."""
    source = make_source(classifier, encoder, tmp_path)
    plain = tmp_path / "model.onnx"
    export_onnx(classifier, plain, 17)
    cfg = config()
    built = build("trt-int8", source, cfg, plain, train_split(), source.work,
                  lambda backend: 1.0, 0.0)
    profile = expected_profile(source, cfg)
    (tmp_path / "published").mkdir()
    folder = planted_trt_folder(tmp_path / "published")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tensorrt"]["shapes"] = profile.as_dict()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(built.files["model.qdq.onnx"], folder / "model.qdq.onnx")
    command = [str(Path(sys.executable).parent / "edge-ner"), "build-engine", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rebuilt = json.loads((folder / "manifest.json").read_text())["tensorrt"]
    assert rebuilt["gpu"] == torch.cuda.get_device_name()
    engine = TensorRTEngineBackend.from_file(folder / "model.engine", profile)
    for batch in batches(encoder):
        np.testing.assert_allclose(engine(batch), built.runtime(batch), atol=1e-3)


def check_settings(details: dict, precision: str, profile: ShapeProfile) -> None:
    settings = details["tensorrt"]
    assert settings["precision"] == precision
    assert settings["shapes"] == profile.as_dict()
    assert settings["tensorrt_version"] and settings["gpu"] and settings["compute_capability"]


def expected_profile(source: Source, cfg: QuantizeConfig) -> ShapeProfile:
    return shape_profile(cfg, WINDOW, median_window_length(source, train_split()["valid"]), 128)


@needs_tensorrt
def test_fp16_engine_matches_pytorch_fp32_on_two_shapes(sharp_classifier, encoder, tmp_path):
    source = make_source(sharp_classifier, encoder, tmp_path)
    cfg = config()
    built = build("trt-fp16", source, cfg, tmp_path / "unused.onnx", train_split(),
                  source.work, None, 0.0)
    assert built.files["model.ep"].is_file()
    assert (built.backend, built.precision) == ("torch-tensorrt", "fp16")
    check_settings(built.details, "fp16", expected_profile(source, cfg))
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
@pytest.mark.parametrize(("kept_f1", "regions"), [(1.0, "fp16"), (-1.0, "fp32")])
def test_int8_engine_mostly_agrees_with_pytorch_fp32_on_two_shapes(
        classifier, encoder, tmp_path, kept_f1, regions):
    """FP16 regions where they keep the F1 budget (a planted F1 check passes), FP32 where
    they do not (it fails); either way the engine's source is published beside it."""
    source = make_source(classifier, encoder, tmp_path)
    plain = tmp_path / "model.onnx"
    export_onnx(classifier, plain, 17)
    cfg = config()
    built = build("trt-int8", source, cfg, plain, train_split(), source.work,
                  lambda backend: kept_f1, 0.0)
    assert built.files["model.engine"].is_file() and built.files["model.qdq.onnx"].is_file()
    assert (built.backend, built.precision) == ("tensorrt", "int8")
    assert built.details["tensorrt"]["float_regions"] == regions
    rejected = built.details["tensorrt"]["fp16_regions_rejected"]
    assert rejected is None if regions == "fp16" else "under the budget's 0.00" in rejected
    check_settings(built.details, "int8", expected_profile(source, cfg))
    assert built.details["calibration"]["sentences"] == 16
    scoring = batches(encoder)
    for batch in scoring:
        assert built.runtime(batch).shape == (*batch["input_ids"].shape, len(LABELS))
    # A random head's logits for a token lie within ~0.35 of each other, so int8 rounding
    # flips near ties: ONNX Runtime running the same QDQ model on the CPU agrees on ~94%
    # of the labels.
    agree, total = label_agreement(TorchBackend(classifier), built.runtime, scoring)
    assert agree / total >= 0.8
    # The published source rebuilds an engine that loads and gives the same logits.
    rebuilt = tmp_path / "rebuilt.engine"
    build_engine(built.files["model.qdq.onnx"], rebuilt, expected_profile(source, cfg))
    again = TensorRTEngineBackend.from_file(rebuilt, expected_profile(source, cfg))
    np.testing.assert_allclose(again(scoring[0]), built.runtime(scoring[0]), atol=1e-3)
