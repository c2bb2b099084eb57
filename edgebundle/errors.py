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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
