"""The serving benchmarks' own parts, on the tiny artifacts: bench.footprint's child
measurements, bench.parity's comparison, bench.session_options' variants."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.footprint import WORKER, cold_start, folder_mb, run_json
from bench.parity import compare_tags
from bench.session_options import backend_factory
from edgener.predictor import Predictor, open_predictor
from edgener.runtime.encoding import Encoder
from tests.test_predictor import LABELS, TEXTS, artifacts  # noqa: F401 (a fixture)

# A parent holding 600 MB that starts the worker: a peak read from ru_maxrss, which
# survives fork and exec, would carry the parent's 600 MB into the child's figure.
HEAVY_PARENT = """
import subprocess, sys
held = bytearray(600 * 2**20)
held[::4096] = b"x" * len(held[::4096])
print(subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True).stdout)
"""


def test_the_worker_reports_its_own_peak_memory_and_speeds(artifacts, tmp_path):  # noqa: F811
    """The worker runs in the measured environment's Python (here the test's own) and
    reports its own peak, whatever its parent holds, without importing torch."""
    test_file = tmp_path / "test.txt"
    test_file.write_text("\n\n".join("\n".join(f"{w} O" for w in text.split())
                                     for text in TEXTS) + "\n", encoding="utf-8")
    worker = [sys.executable, "-c", WORKER, str(artifacts["onnx-fp32"]), str(test_file),
              "1", "2"]
    result = run_json([sys.executable, "-c", HEAVY_PARENT, *worker])
    assert result["sentences"] == len(TEXTS)
    assert result["batch1_sps"] > 0 and result["batched_sps"] > 0
    assert 10 < result["peak_rss_mb"] < 300  # its own: far under the parent's 600 MB
    assert result["torch_imported"] is False  # an ONNX artifact needs the runtime only
    with pytest.raises(RuntimeError, match="tagging worker failed"):
        run_json([sys.executable, "-c", WORKER, str(tmp_path / "nothing"), str(test_file),
                  "1", "2"])


def planted_env(root: Path, script: str) -> Path:
    """An environment whose `edge-ner` is a shell script."""
    command = root / "bin" / "edge-ner"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    command.chmod(0o755)
    return root


def test_cold_start_waits_for_the_first_entities_not_for_the_exit(artifacts, tmp_path):  # noqa: F811,E501
    seconds = cold_start(Path(sys.prefix), artifacts["onnx-fp32"], threads=1)
    assert 0 < seconds < 60
    with pytest.raises(RuntimeError, match="edge-ner predict failed"):
        cold_start(Path(sys.prefix), tmp_path / "nothing", threads=1)
    # Entities after 1.5 s of loading: the wait is counted ...
    slow = planted_env(tmp_path / "slow", 'sleep 1.5\necho \'{"entities": []}\'\n')
    assert 1.5 <= cold_start(slow, tmp_path, threads=1) < 10
    # ... the time the process takes to exit after them is not.
    lingering = planted_env(tmp_path / "lingering", 'echo \'{"entities": []}\'\nsleep 2\n')
    assert cold_start(lingering, tmp_path, threads=1) < 1.5


def test_folder_size_counts_a_linked_file_once(tmp_path):
    linked, copied = tmp_path / "linked", tmp_path / "copied"
    for folder in (linked, copied):
        folder.mkdir()
        (folder / "a").write_bytes(b"x" * 1_000_000)
    alone = folder_mb(linked)
    assert 1_000_000 / 2**20 <= alone < 1.1
    (linked / "link").symlink_to(linked / "a")
    (copied / "copy").write_bytes(b"x" * 1_000_000)  # what following the link would count
    assert folder_mb(linked) - alone < 0.05  # the link's own block at most
    assert folder_mb(copied) == pytest.approx(2 * alone)


def test_parity_finds_no_difference_between_equal_encoders_and_finds_a_real_one(
        artifacts):  # noqa: F811
    from transformers import AutoTokenizer

    lean = open_predictor(artifacts["onnx-fp32"], threads=1)
    tokenizer = AutoTokenizer.from_pretrained(artifacts["onnx-fp32"])
    settings = lean.manifest["encoding"]
    same = Predictor(lean.backend, Encoder.from_transformers(tokenizer, LABELS, **settings),
                     LABELS)
    words = [text.split() for text in TEXTS]
    assert compare_tags(lean, same, words) == {"differing_windows": 0,
                                               "differing_sentences": 0,
                                               "differing_entities": 0}
    # Shorter windows cut every text here differently: parity must see it.
    other = Predictor(lean.backend, Encoder.from_transformers(
        tokenizer, LABELS, **{**settings, "max_length": 12}), LABELS)
    assert compare_tags(lean, other, words)["differing_windows"] == len(words)


def test_every_session_variant_gives_the_default_answers(artifacts, tmp_path):  # noqa: F811
    model = artifacts["onnx-int8"] / "model.onnx"
    saved = tmp_path / "optimized.onnx"
    variants = [backend_factory(model, 1, save_to=saved), backend_factory(model, 1, spinning=False),
                backend_factory(model, 1, "ORT_ENABLE_BASIC")]
    answers = [open_predictor(artifacts["onnx-int8"], 1, backend=make()).predict_batch(
        TEXTS) for make in variants]
    saved_graph = backend_factory(saved, 1, "ORT_DISABLE_ALL")()
    answers.append(open_predictor(artifacts["onnx-int8"], 1, backend=saved_graph)
                   .predict_batch(TEXTS))
    assert saved.is_file()
    assert all(json.dumps([[e.as_dict() for e in f] for f in a]) ==
               json.dumps([[e.as_dict() for e in f] for f in answers[0]]) for a in answers)
