"""What every variant builder takes (a published model to quantize) and gives back (a built
variant, before it is judged and published)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgener.runtime.backend import Backend
from edgener.training.publish import fingerprint
from quantize import ort_quant
from quantize.config import QuantizeConfig


@dataclass
class Source:
    """A published model to quantize, with what every variant needs from it."""

    name: str
    folder: Path
    model: torch.nn.Module
    tokenizer: object
    labels: list[str]
    manifest: dict
    encoder: object
    work: Path  # scratch files for this model
    fused: tuple[Path, dict] | None = None  # ORT-fused graph and its fused-operator counts

    @property
    def fingerprint(self) -> str:
        # The publication time too: a model retrained with the same config is new weights.
        return fingerprint([self.manifest["config_fingerprint"], self.manifest["created"]])


@dataclass
class Built:
    """One variant's result, before it is judged and published."""

    files: dict[str, Path]  # name in the artifact folder -> file or folder to copy there
    backend: str
    precision: str
    runtime: Backend  # what serves the artifact; its valid F1 is the verdict's
    details: dict = field(default_factory=dict)


def calibration_reader(source: Source, config: QuantizeConfig, splits: dict):
    train = splits["train"][: config.calibration_sentences]
    return ort_quant.CalibrationReader(source.encoder, train)
