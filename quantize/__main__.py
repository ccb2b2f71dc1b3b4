import sys

from edgener.cli import stage_command

sys.exit(stage_command("quantize", prog="python -m quantize"))
