import sys

from edgener.training.stage import run_stage_module

sys.exit(run_stage_module("quantize.build", None, "python -m quantize"))
