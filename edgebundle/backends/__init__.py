"""Backends turn a staged app directory into one executable. One module per backend, each with a
*pure* ``command(...) -> argv`` (tested as data) and the path where its result lands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from ..plan import BackendName
from . import pyinstaller


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A build's working directory. ``app`` holds the entry script, the runtime package and data."""

    workdir: Path
    name: str
    interpreter_module: str
    strip: bool = True

    @property
    def app(self) -> Path:
        return self.workdir / "app"

    @property
    def entry(self) -> Path:
        return self.app / "main.py"

    @property
    def log(self) -> Path:
        return self.workdir / "build.log"

    def data_files(self) -> list[Path]:
        """Files bundled next to the runtime package (model, manifest, self-test), sorted."""
        return sorted(p for p in self.app.iterdir() if p.is_file() and p.name != "main.py")


class Backend(Protocol):
    def command(self, python: str, stage: Stage) -> list[str]: ...

    def result(self, stage: Stage) -> Path: ...


BACKENDS: Final[dict[BackendName, Backend]] = {"pyinstaller": pyinstaller}
