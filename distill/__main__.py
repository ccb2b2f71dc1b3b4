import sys

from edgener.cli import stage_command

sys.exit(stage_command("distill", prog="python -m distill"))
