"""One error hierarchy for the builder; each kind maps to its own exit code in exactly one place (cli.py).

Every message is one line that names the file and the key, or says what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeBundleError(Exception):
    """Base class: a fatal, expected error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(EdgeBundleError):
    """A recipe, target or command-line value is wrong."""

    exit_code = 3


class ModelError(EdgeBundleError):
    """The model cannot be loaded by the interpreter, or does not fit the recipe."""

    exit_code = 4


class ToolMissingError(EdgeBundleError):
    """An external tool (python of the right version, pip, PyInstaller, ...) is not available."""

    exit_code = 5


class BuildError(EdgeBundleError):
    """The backend or another build step failed."""

    exit_code = 6


class BudgetExceededError(EdgeBundleError):
    """A device test ran, and at least one budget failed."""

    exit_code = 7


class IntegrityError(EdgeBundleError):
    """A built binary's model bytes do not match its own manifest: it was tampered with or damaged."""

    exit_code = 10


class DeviceError(EdgeBundleError):
    """The device cannot be reached or cannot run the binary."""

    exit_code = 8


class OutputError(EdgeBundleError):
    """An output path cannot or must not be written (it names an input, a directory, a device node;
    its file system is read-only or full; its name is too long)."""

    exit_code = 9


# Not EdgeBundleError kinds, but exits the CLI documents too (README: Errors and exit codes).
EXIT_INTERNAL = 70  # an unexpected exception: a bug; --debug shows its traceback (BSD's EX_SOFTWARE)
EXIT_SIGNAL_BASE = 128  # interrupted by signal N: 128 + N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived: raised in the main thread so that every ``finally`` cleans
    up (partial outputs, staging directories, child processes) before the CLI exits 128 + signal.
    A KeyboardInterrupt, so that no ``except Exception`` swallows it and every handler of Ctrl-C
    handles it too."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
