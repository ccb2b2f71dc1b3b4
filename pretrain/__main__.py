import sys

from edgener.training.stage import run_stage_module

sys.exit(run_stage_module("pretrain.train", None, "python -m pretrain"))
