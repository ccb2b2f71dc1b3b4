"""End to end: train a tiny random BERT on a CoNLL-2003 slice, reload it, resume, torchrun."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

from edgener.runtime.encoding import Encoder
from edgener.training.datasets import load_dataset
from edgener.training.loop import evaluate
from tests.conftest import module_env, run_module

pytestmark = pytest.mark.slow


def tiny_args(tiny_bert: Path, conll_dir: Path, run: str, *extra: str) -> list[str]:
    # max_length 32 forces long sentences into overlapping windows.
    return [
        "--preset", "minilm", f"model={tiny_bert}", f"data_dir={conll_dir.parent}",
        f"run={run}", "train_limit=240", "eval_limit=80", "epochs=2", "batch_size=8",
        "lr=1e-3", "max_length=32", "window_overlap=8", "checkpoint_every=5", *extra,
    ]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_bert, conll_dir) -> Path:
    """One uninterrupted run; other tests compare against it."""
    workdir = tmp_path_factory.mktemp("reference")
    result = run_module("teacher", *tiny_args(tiny_bert, conll_dir, "ref"), cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir / "runs" / "ref" / "teacher"


def test_teacher_writes_complete_artifacts(reference_run: Path):
    for name in ("model.safetensors", "config.json", "tokenizer.json", "labels.json",
                 "config.yaml", "metrics.json", "manifest.json"):
        assert (reference_run / name).is_file(), name
    metrics = json.loads((reference_run / "metrics.json").read_text())
    for split in ("valid", "test"):
        for key in ("f1", "precision", "recall"):
            assert 0.0 <= metrics[split][key] <= 1.0
        assert set(metrics[split]["per_type"]) <= {"PER", "LOC", "ORG", "MISC"}
        assert "f1" in metrics[split]["per_type"]["PER"]
    assert metrics["wall_time_s"] > 0
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert all(row["steps_per_s"] > 0 for row in metrics["history"])
    # 240 sentences, batch 8, 2 epochs: 60 steps, more as long sentences take several windows.
    assert metrics["steps"] > 60 and metrics["steps"] % 2 == 0
    manifest = json.loads((reference_run / "manifest.json").read_text())
    assert manifest["stage"] == "teacher"
    coverage = manifest["vocabulary_coverage"]["train"]  # CoNLL in MiniLM's vocabulary
    assert coverage["words"] > 2000 and coverage["tokens"] >= coverage["words"]
    assert coverage["unknown_token_share"] < 0.001
    assert manifest["labels"] == json.loads((reference_run / "labels.json").read_text())
    assert not list(reference_run.parent.glob(".teacher.staging-*"))


def test_reloaded_teacher_reproduces_its_metrics(reference_run: Path, conll_dir: Path):
    model = AutoModelForTokenClassification.from_pretrained(reference_run)
    tokenizer = AutoTokenizer.from_pretrained(reference_run)
    labels = json.loads((reference_run / "labels.json").read_text())
    # The widened casing table survives the round trip.
    assert model.config.type_vocab_size == 5
    dataset = load_dataset(str(conll_dir))
    valid = dataset.split("valid")[:80]
    encoder = Encoder.from_transformers(
        tokenizer, labels, max_length=32, window_overlap=8, case_features=True)
    scores = evaluate(model, encoder, valid, labels, 16, torch.device("cpu"))
    metrics = json.loads((reference_run / "metrics.json").read_text())
    assert scores["f1"] == pytest.approx(metrics["valid"]["f1"], abs=1e-9)
    assert scores["support"] == metrics["valid"]["support"]


def test_same_seed_same_metrics(tmp_path, tiny_bert, conll_dir, reference_run):
    result = run_module("teacher", *tiny_args(tiny_bert, conll_dir, "again"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    again = json.loads((tmp_path / "runs/again/teacher/metrics.json").read_text())
    reference = json.loads((reference_run / "metrics.json").read_text())
    assert again["valid"] == reference["valid"]
    assert again["test"] == reference["test"]


def test_rerun_with_same_config_is_up_to_date(tmp_path, tiny_bert, conll_dir, reference_run):
    shutil.copytree(reference_run, tmp_path / "runs" / "ref" / "teacher")
    result = run_module("teacher", *tiny_args(tiny_bert, conll_dir, "ref"), cwd=tmp_path)
    assert result.returncode == 0
    assert "up to date" in result.stdout


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_to_identical_result(
    tmp_path, tiny_bert, conll_dir, reference_run, stop_signal
):
    """Ctrl-C (SIGINT) or a hard kill mid-epoch; the same command then picks up the work."""
    args = tiny_args(tiny_bert, conll_dir, "ref")
    command = [sys.executable, "-m", "teacher", *args]
    checkpoint = tmp_path / "runs" / "ref" / ".teacher-work" / "checkpoint.pt"
    # A suite started in the background (`make test &`) inherits SIGINT ignored, and so
    # would the training; give it the default handling that a terminal's Ctrl-C meets.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=module_env(),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(stop_signal)
    output, _ = process.communicate(timeout=120)
    if stop_signal == signal.SIGINT:
        assert process.returncode == 130, output
        assert "interrupted" in output
    assert checkpoint.exists()
    assert not (tmp_path / "runs" / "ref" / "teacher").exists()

    resumed = run_module("teacher", *args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout
    metrics = json.loads((tmp_path / "runs/ref/teacher/metrics.json").read_text())
    reference = json.loads((reference_run / "metrics.json").read_text())
    assert metrics["valid"] == reference["valid"]
    assert metrics["test"] == reference["test"]


def test_torchrun_two_cpu_processes(tmp_path, tiny_bert, conll_dir, reference_run):
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29517")
    result = run_module("teacher", *tiny_args(tiny_bert, conll_dir, "ddp"), cwd=tmp_path,
                        launcher=launcher)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs/ddp/teacher/metrics.json").read_text())
    assert metrics["processes"] == 2
    reference = json.loads((reference_run / "metrics.json").read_text())
    assert metrics["steps"] == reference["steps"]  # the global batch is split, not multiplied
    assert 0.0 <= metrics["test"]["f1"] <= 1.0


def chinese_dataset(folder: Path) -> Path:
    """Character-level sentences, most of whose characters MiniLM's vocabulary lacks."""
    folder.mkdir()
    sentences = "".join(f"{c} {t}\n" for c, t in zip("张三在纽约工作", ["B-PER", "I-PER", "O",
                                                                    "B-LOC", "I-LOC", "O",
                                                                    "O"], strict=True))
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text((sentences + "\n") * 3 + "中 O\n国 O\n\n",
                                             encoding="utf-8")
    return folder


def test_a_vocabulary_blind_to_the_text_stops_the_teacher_before_training(tmp_path, tiny_bert):
    data = chinese_dataset(tmp_path / "zh")
    result = run_module("teacher", "--preset", "minilm", f"model={tiny_bert}",
                        f"dataset={data}", "run=zh", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    vocabulary = AutoTokenizer.from_pretrained(tiny_bert).get_vocab()
    characters = [line.split()[0] for line in (data / "train.txt").read_text().splitlines()
                  if line]
    unknown = [c for c in characters if c not in vocabulary]
    assert 0.5 < len(unknown) / len(characters) < 1  # some known, most not
    assert f"{100 * len(unknown) / len(characters):.1f}% of subword tokens" in line
    assert "train, with" in line and "max_unknown_share=1" in line
    assert not (tmp_path / "runs" / "zh" / ".teacher-work").exists()  # nothing trained


def test_bad_data_is_one_clear_line(tmp_path, tiny_bert):
    data = tmp_path / "bad"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text("ACME B-ORG\nhires\n")
    result = run_module("teacher", "--preset", "minilm", f"model={tiny_bert}",
                        f"dataset={data}", cwd=tmp_path)
    assert result.returncode == 1
    assert "train.txt:2" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
