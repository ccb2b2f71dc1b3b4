import sys

from distill.train import main
from edgener.cli import run_stage

sys.exit(run_stage(main))
