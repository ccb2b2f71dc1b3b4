"""Command-line entry: expected failures print one clear line, never a stack trace."""

from __future__ import annotations

from collections.abc import Callable

from edgener.artifacts import ArtifactError
from edgener.backbone import BackboneError
from edgener.config import ConfigError
from edgener.data import DataError
from edgener.training import console

EXPECTED_ERRORS = (ArtifactError, BackboneError, ConfigError, DataError, FileNotFoundError)


def run_cli(main: Callable[[], int]) -> int:
    try:
        return main()
    except EXPECTED_ERRORS as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
