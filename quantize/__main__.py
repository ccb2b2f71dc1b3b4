import sys

from edgener.cli import run_stage
from quantize.build import main

sys.exit(run_stage(main))
