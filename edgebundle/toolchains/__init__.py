"""Where a build runs: a managed virtual environment on the host (``venv``), and later an emulated
Debian root of another architecture. Both satisfy ``Toolchain``, so a backend never knows which."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from ..runner import Echo


class Toolchain(Protocol):
    @property
    def python(self) -> str:
        """The build environment's Python, as the first element of a command line."""
        ...

    def describe(self) -> str: ...

    def ensure(self, echo: Echo) -> None:
        """Create the environment if it does not exist yet (cached across builds)."""
        ...

    def run(self, argv: list[str], *, log: Path | None, what: str, cwd: Path | None = None) -> str:
        """Run a command inside the environment (argv[0] may be ``self.python``)."""
        ...


def cache_dir() -> Path:
    """``$EDGEBUNDLE_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgebundle``, else ``~/.cache/edgebundle``."""
    explicit = os.environ.get("EDGEBUNDLE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgebundle"
