import sys

from edgener.cli import stage_command

sys.exit(stage_command("teacher", prog="python -m teacher"))
