"""What the benchmark commands read before they measure: bench.compare's dataset from the
artifacts' manifests, an offline hub refused at once, and bench.report's module level free
of torch (a row's spawned process re-imports it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgener.runtime.artifacts import ArtifactError
from edgener.runtime.conll import DataError
from edgener.training.datasets import load_dataset
from tests.conftest import REPO, module_env


def write_manifest(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(fields), encoding="utf-8")
    return folder


@pytest.fixture
def planted_run(tmp_path: Path) -> Path:
    """A run whose teacher recorded a dataset folder that exists, a student that copied
    it, and a quantized artifact that names only its source model (as quantize writes it:
    a source folder relative to where quantize ran, and the source's name)."""
    data = tmp_path / "data" / "conll2003"
    data.mkdir(parents=True)
    run = tmp_path / "runs" / "r"
    recorded = {"name": "conll2003", "source": str(data), "files": {}}
    write_manifest(run / "teacher", stage="teacher", dataset=recorded)
    write_manifest(run / "students" / "L3", stage="student", dataset=recorded)
    write_manifest(run / "quantized" / "L3-ort-int8-static", stage="quantized",
                   source="runs/r/students/L3", source_name="L3")
    return run


def test_compare_reads_the_dataset_from_a_model_manifest(planted_run):
    from bench.compare import artifact_dataset

    data = str(planted_run.parent.parent / "data" / "conll2003")
    assert artifact_dataset(planted_run / "teacher") == data
    assert artifact_dataset(planted_run / "students" / "L3") == data


def test_compare_follows_a_quantized_artifact_to_its_source_model(planted_run, monkeypatch):
    from bench.compare import artifact_dataset

    # From elsewhere, the recorded relative source folder is not there; the run's own is.
    monkeypatch.chdir(planted_run / "quantized")
    assert artifact_dataset(Path("L3-ort-int8-static")) == \
        str(planted_run.parent.parent / "data" / "conll2003")
    # Once the recorded dataset folder is gone, its name, to look up under the data dir.
    (planted_run.parent.parent / "data" / "conll2003").rmdir()
    assert artifact_dataset(Path("L3-ort-int8-static")) == "conll2003"


def test_compare_says_when_no_manifest_records_a_dataset(tmp_path):
    from bench.compare import artifact_dataset

    with pytest.raises(ArtifactError, match="manifest.json missing"):
        artifact_dataset(tmp_path / "nothing")
    orphan = write_manifest(tmp_path / "runs" / "r" / "quantized" / "x", stage="quantized",
                            source="gone", source_name="gone")
    with pytest.raises(ArtifactError, match="pass --dataset"):
        artifact_dataset(orphan)


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_an_unknown_dataset_with_the_hub_offline_fails_without_trying_it(
        variable, tmp_path, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "1")

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was called although it is offline")

    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    with pytest.raises(DataError) as raised:
        load_dataset("no-such-dataset", str(tmp_path))
    message = str(raised.value)
    assert "'no-such-dataset' is neither a folder nor under the data dir" in message
    assert str(tmp_path) in message
    assert f"the Hugging Face hub is offline ({variable} is set)" in message


def test_bench_report_module_level_imports_neither_torch_nor_transformers():
    """multiprocessing's spawn re-imports `python -m bench.report` in every row's process:
    what its module level (and bench.measure's) imports, every row pays for."""
    probe = ("import sys, bench.report, bench.measure; "
             "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=module_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
