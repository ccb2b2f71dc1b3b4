"""How a training-stack command runs: the libraries' chatter silenced, and a missing
extra's library, wherever the command imports it, one line naming the extra."""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable

from edgener.runtime.console import run_cli
from edgener.runtime.errors import needs_extra


def quiet_libraries() -> None:
    """Keep the terminal for the stage's own progress: no load reports, optional-kernel
    warnings (torchao, pulled in by transformers, warns about CUDA kernels on a CPU box) or
    advice that torch.compile and torch.export print at every build."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    for name in ("torchao", "torch.utils._pytree", "torch.export", "torch._dynamo",
                 "torch._inductor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in (r"torch\._dynamo", r"torch\._inductor", "copyreg"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)


def run_stage(main: Callable[[], int]) -> int:
    """A training-stack command's main, with the libraries' chatter silenced; a library of
    an extra that is missing, wherever the command imports it, is one line naming it."""

    def quiet_main() -> int:
        with needs_extra("this command"):
            quiet_libraries()
            return main()

    return run_cli(quiet_main)


def run_stage_module(module: str, argv: list[str] | None, prog: str) -> int:
    """The `main(argv, prog)` of a stage's module, imported only now: a missing extra is
    then one line, not an ImportError at import."""
    return run_stage(lambda: importlib.import_module(module).main(argv, prog=prog))
