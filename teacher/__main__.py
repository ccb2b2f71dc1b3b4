import sys

from edgener.training.stage import run_stage_module

sys.exit(run_stage_module("teacher.train", None, "python -m teacher"))
