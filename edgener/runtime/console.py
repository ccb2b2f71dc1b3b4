"""The terminal every command writes to, and how a command ends: an expected failure is one
line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgener.runtime.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console


def get_console() -> Console:
    """The terminal console of every command, made on first use: rich takes a tenth of a
    second to import, which a plain `edge-ner predict` never pays."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console()
    return _console


_console: Console | None = None


def __getattr__(name: str):
    """`from edgener.runtime.console import console` (the stages' import) makes the console then."""
    if name == "console":
        return get_console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def print_wide(renderable, min_width: int) -> None:
    """Print a wide table whole: rich assumes 80 columns for a log file or a pipe."""
    console = get_console()
    if not console.is_terminal:
        console.width = max(console.width, min_width)
    console.print(renderable)


def run_cli(main: Callable[[], int]) -> int:
    """Run a command's main; an expected failure is one line on stderr and its exit code."""
    try:
        return main()
    except UserError as error:
        print(f"{error.label}: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except OSError as error:  # a path the user gave: missing, a folder, not writable
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr, flush=True)
        return 1
