"""What a user installs and where runs go: the wheel carries the presets and the console
script, the base install names only the runtime, and a run is a name under runs/."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgener.training.config import ConfigError, dataset_run_name, preset_path, run_path
from tests.conftest import REPO


def test_an_installed_wheel_carries_every_preset_and_the_console_script(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("edge_ner-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(archive.read(n).decode() for n in archive.namelist()
                            if n.endswith("entry_points.txt"))
    assert "edge-ner = edgener.cli.main:entry" in entry_points
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    # Outside the checkout, with only the installed copy on the path: every preset loads.
    probe = ("import sys; from edgener.training.config import CONFIG_ROOT, preset_path; "
             "print(CONFIG_ROOT); "
             "print(sorted(p.parent.name + '/' + p.name for p in CONFIG_ROOT.glob('*/*.yaml')));"
             "preset_path('teacher', 'minilm')")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                          f"{str(target)!r}); {probe}"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(target))
    presets = sorted(f"{p.parent.name}/{p.name}" for p in (REPO / "configs").glob("*/*.yaml"))
    assert presets and out[1] == str(presets)


def test_presets_resolve_through_the_package():
    assert preset_path("teacher", "minilm").read_text().startswith("#")


def test_the_base_install_is_the_runtime_alone():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {requirement.split(">")[0].split("=")[0] for requirement in project["dependencies"]}
    assert base == {"onnxruntime", "tokenizers", "numpy", "rich"}
    extras = project["optional-dependencies"]
    assert any(r.startswith("torch==") for r in extras["train"])
    assert {"train", "quantize", "report", "serve", "tensorrt", "all", "dev"} <= set(extras)
    # The service's extra is the ASGI stack and the metrics client, nothing heavy.
    serve = {r.split(">")[0].split("=")[0] for r in extras["serve"]}
    assert serve == {"starlette", "uvicorn", "prometheus-client"}


def test_a_run_is_a_name_never_a_path(tmp_path):
    assert run_path("runs", "conll2003") == Path("runs/conll2003")
    for bad in (str(tmp_path / "my-ner"), "../elsewhere", "a/b", "", ".."):
        with pytest.raises(ConfigError, match="not a plain name"):
            run_path("runs", bad)


def test_a_dataset_folder_names_its_run(tmp_path):
    (tmp_path / "my-ner").mkdir()
    assert dataset_run_name(f"{tmp_path}/my-ner/") == "my-ner"
    assert dataset_run_name("conll2003") == "conll2003"


def test_make_names_the_run_of_a_dataset_path_by_its_folder(tmp_path):
    dry = subprocess.run(["make", "-n", "teacher", f"DATASET={tmp_path}/my-ner"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert "run=my-ner " in dry.stdout and f"run={tmp_path}" not in dry.stdout
