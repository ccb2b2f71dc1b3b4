"""Settings a stage cannot run with are refused before anything loads, in one line that
names the setting."""

from __future__ import annotations

import pytest

from bench.config import ReportConfig
from distill.config import DistillConfig
from edgener.training.config import ConfigError
from pretrain.config import PretrainConfig
from quantize.config import QuantizeConfig
from teacher.config import TeacherConfig
from tests.conftest import run_module


@pytest.mark.parametrize(("module", "args", "message"), [
    ("teacher", ["epochs=0"], "epochs=0 cannot run: epochs must be at least 1"),
    ("teacher", ["precision=fp8"], "precision='fp8': choose one of auto, fp32, fp16, bf16"),
    ("teacher", ["max_length=2"], "max_length=2 cannot run: max_length must be at least 3"),
    ("distill", ["--preset", "minilm", "temperature=0"],
     "temperature=0.0 cannot run: temperature must be above 0"),
    ("quantize", ["calibration_sentences=0"],
     "calibration_sentences=0 cannot run: calibration_sentences must be at least 1"),
    ("quantize", ["calibration_method=kl"],
     "calibration_method='kl': choose one of minmax, entropy, percentile"),
    ("bench.report", ["latency_rounds=0"],
     "latency_rounds=0 cannot run: latency_rounds must be at least 1"),
])
def test_a_stage_refuses_a_setting_it_cannot_run_with_before_loading_anything(
        tmp_path, module, args, message):
    # No run, no data and no model exist here: had the stage gone on, it would have
    # failed on those instead.
    result = run_module(module, *args, f"data_dir={tmp_path}/none", "run=absent",
                        cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr == f"error: {message}\n"


@pytest.mark.parametrize(("config", "values"), [
    (TeacherConfig, {"batch_size": 0}),
    (TeacherConfig, {"lr": -1e-5}),
    (TeacherConfig, {"dropout": 1.0}),
    (DistillConfig, {"epochs": -1}),
    (QuantizeConfig, {"variants": ["ort-int4"]}),
    (QuantizeConfig, {"trt_max_length": 2}),
    (ReportConfig, {"threads": 0}),
    (PretrainConfig, {"mode": "resume"}),
    (PretrainConfig, {"mlm_probability": 0.0}),
])
def test_configs_made_in_code_are_checked_too(config, values):
    with pytest.raises(ConfigError, match=next(iter(values))):
        config(**values)


def test_the_presets_pass_their_own_checks():
    """Every shipped preset, full and quick, loads (a check too strict for them would stop
    `make all`)."""
    from edgener.training.config import CONFIG_ROOT, load_config

    classes = {"pretrain": PretrainConfig, "teacher": TeacherConfig,
               "distill": DistillConfig, "quantize": QuantizeConfig, "report": ReportConfig}
    presets = sorted(CONFIG_ROOT.glob("*/*.yaml"))
    assert len(presets) >= 4
    for path in presets:
        for quick in (False, True):
            load_config(classes[path.parent.name], path, {}, quick)
