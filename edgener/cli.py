"""Command-line entry: expected failures print one clear line, never a stack trace."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import transformers

from edgener.artifacts import ArtifactError
from edgener.backbone import BackboneError
from edgener.config import ConfigError
from edgener.data import DataError
from edgener.training import TrainingInterrupted, console

EXPECTED_ERRORS = (ArtifactError, BackboneError, ConfigError, DataError, FileNotFoundError)


def quiet_libraries() -> None:
    """Keep the terminal for the stage's own progress: no load reports, optional-kernel
    warnings (torchao, pulled in by transformers, warns about CUDA kernels on a CPU box) or
    advice that torch.compile and torch.export print at every build."""
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    for name in ("torchao", "torch.utils._pytree", "torch.export", "torch._dynamo",
                 "torch._inductor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in (r"torch\._dynamo", r"torch\._inductor", "copyreg"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)


def print_wide(renderable, min_width: int) -> None:
    """Print a wide table whole: rich assumes 80 columns for a log file or a pipe."""
    if not console.is_terminal:
        console.width = max(console.width, min_width)
    console.print(renderable)


def run_cli(main: Callable[[], int]) -> int:
    quiet_libraries()
    try:
        return main()
    except EXPECTED_ERRORS as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    except TrainingInterrupted as interrupted:
        console.print(f"\n[yellow]interrupted[/]: {interrupted}", highlight=False, soft_wrap=True)
        return 130
