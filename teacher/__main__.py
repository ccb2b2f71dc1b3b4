import sys

from edgener.cli import run_stage
from teacher.train import main

sys.exit(run_stage(main))
