import sys

from edgener.cli import run_cli
from teacher.train import main

sys.exit(run_cli(main))
