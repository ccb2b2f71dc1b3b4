import sys

from distill.train import main
from edgener.cli import run_cli

sys.exit(run_cli(main))
