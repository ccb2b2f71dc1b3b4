"""The one kind of failure a command reports without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """An expected failure (a missing artifact, bad data or config, a missing extra): a
    command prints its message on one line and exits with `exit_code`."""

    exit_code = 1
    label = "error"
