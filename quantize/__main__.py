import sys

from edgener.cli import run_cli
from quantize.build import main

sys.exit(run_cli(main))
