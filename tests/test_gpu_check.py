"""`make gpu-check`: one line and exit 0 without CUDA, the F1 verdict of GPU rows against
their CPU FP32 counterparts on planted report rows, and the FP16 weights it carries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu_check import compare_with_cpu, judge, pack_weights
from edgener.training.backbone import build_token_classifier
from tests.conftest import REPO, module_env

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


@no_cuda
def test_without_cuda_it_says_so_in_one_line_and_passes():
    result = subprocess.run(["make", "--no-print-directory", "gpu-check"], cwd=REPO,
                            env=module_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if line.startswith("gpu-check:")]
    assert said == [f"gpu-check: no CUDA device (torch {torch.__version__}); nothing to "
                    "check here"]
    assert not result.stderr


def test_a_python_without_torch_gets_the_line_too():
    # A bare machine's python3: torch cannot be imported at all.
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['gpu_check']; "
            "runpy.run_module('bench.gpu_check', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=module_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        "gpu-check: PyTorch is not installed, so no CUDA device can be used; nothing to "
        "check here"]


def report_row(name, device_type, f1, source, backend="pytorch", precision="fp32"):
    return {"name": name, "device_type": device_type, "device": device_type.upper(),
            "backend": backend, "precision": precision, "test_f1": f1, "source": source,
            "p50_ms": 1.0, "speedup_vs_eager": 1.0}


def test_each_gpu_row_is_judged_against_the_cpu_fp32_row_of_its_model():
    rows = [report_row("teacher", "cpu", 0.900, "teacher"),
            report_row("L3", "cpu", 0.880, "L3"),
            # A CPU INT8 row of L3 scores higher: it is no FP32 counterpart.
            report_row("L3-ort-int8-dynamic", "cpu", 0.895, "L3", "onnxruntime", "int8"),
            report_row("teacher-cuda-fp16", "cuda", 0.899, "teacher", precision="fp16"),
            report_row("L3-cuda-int8", "cuda", 0.8705, "L3", precision="int8"),  # -0.95
            report_row("L3-trt-int8", "cuda", 0.865, "L3", "tensorrt", "int8"),  # -1.5
            report_row("L2-cuda-fp16", "cuda", 0.85, "L2", precision="fp16")]  # no CPU row
    judged = {r["name"]: r for r in compare_with_cpu(rows, max_f1_drop=1.0)}
    assert set(judged) == {"teacher-cuda-fp16", "L3-cuda-int8", "L3-trt-int8", "L2-cuda-fp16"}
    assert judged["teacher-cuda-fp16"]["ok"] and judged["teacher-cuda-fp16"]["cpu_fp32"] == \
        "teacher"
    assert judged["L3-cuda-int8"]["ok"]
    assert judged["L3-cuda-int8"]["change_points"] == pytest.approx(-0.95)
    assert judged["L3-cuda-int8"]["cpu_fp32_test_f1"] == 0.880
    assert not judged["L3-trt-int8"]["ok"]
    assert not judged["L2-cuda-fp16"]["ok"] and judged["L2-cuda-fp16"]["cpu_fp32"] is None


def test_a_gpu_row_the_report_could_not_measure_fails_the_check():
    report = {"rows": [report_row("teacher", "cpu", 0.90, "teacher"),
                       report_row("teacher-cuda-fp16", "cuda", 0.90, "teacher", precision="fp16")],
              "failed": [{"name": "teacher-trt-int8", "device_type": "cuda", "source": "teacher",
                          "error": "TensorRT failed to run the engine"},
                         {"name": "teacher-inc-int8", "device_type": "cpu", "source": "teacher",
                          "error": "torch.compile failed"}]}
    judged = {r["name"]: r for r in judge(report, max_f1_drop=1.0)}
    assert set(judged) == {"teacher-cuda-fp16", "teacher-trt-int8"}  # CPU failures aside
    assert judged["teacher-cuda-fp16"]["ok"]
    assert not judged["teacher-trt-int8"]["ok"]
    assert judged["teacher-trt-int8"]["error"] == "TensorRT failed to run the engine"


def test_packed_fp16_weights_train_as_fp32_and_give_the_same_model(tiny_bert: Path, tmp_path):
    packed = tmp_path / "packed"
    pack_weights(tiny_bert, packed)
    from safetensors.torch import load_file

    stored = load_file(packed / "model.safetensors")
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    assert (packed / "model.safetensors").stat().st_size < \
        0.6 * (tiny_bert / "model.safetensors").stat().st_size
    assert (packed / "tokenizer.json").is_file() and (packed / "config.json").is_file()
    labels = ["O", "B-PER", "I-PER"]
    torch.manual_seed(0)
    original = build_token_classifier(str(tiny_bert), labels, case_features=False).eval()
    torch.manual_seed(0)
    restored = build_token_classifier(str(packed), labels, case_features=False).eval()
    assert {p.dtype for p in restored.parameters()} == {torch.float32}
    ids = torch.randint(1, 1000, (2, 9))
    with torch.no_grad():
        expected, got = original(input_ids=ids).logits, restored(input_ids=ids).logits
    assert (got - expected).abs().max() < 1e-2 * expected.abs().max()
