"""Backends turn a staged app directory into the runner of a binary: a one-folder program holding
Python, NumPy, Pillow, the interpreter and the runtime (never the model; see runners.py for how a
runner, the launcher and a model's payload become one file). One module per backend, each with a
``prepare`` (files it needs in the stage), a *pure* ``command(...) -> argv`` (tested as data), the
folder where its result lands, and ``finish``, which lays that folder out for unpacking on a device."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from ..proc import Echo, LineHandler
from ..target import BackendName
from . import launcher, nuitka, pyinstaller

RUNTIME_SRC = Path(__file__).resolve().parent.parent / "runtime"
RUNTIME_PACKAGE = "ebrt"  # the runtime's name inside binaries
ENTRY_SCRIPT = f"from {RUNTIME_PACKAGE}.app import entry\n\nentry()\n"


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A build's working directory. ``app`` holds the entry script, the runtime package and data."""

    workdir: Path
    name: str
    interpreter_module: str
    numpy: bool = True  # whether the program carries NumPy (Pins.numpy)
    strip: bool = True
    # link with packed relative relocations (DT_RELR), which the target's glibc floor must allow
    pack_relocations: bool = False
    # where the build's commands log; default inside workdir (a build keeps its log outside, so
    # that the log a failure names outlives the staging directory)
    log_file: Path | None = None

    @property
    def app(self) -> Path:
        return self.workdir / "app"

    @property
    def entry(self) -> Path:
        return self.app / "main.py"

    @property
    def log(self) -> Path:
        return self.log_file or self.workdir / "build.log"

    def data_files(self) -> list[Path]:
        """Files bundled next to the runtime package (model, manifest, self-test), sorted."""
        return sorted(p for p in self.app.iterdir() if p.is_file() and p.name != "main.py")


def stage_runtime(stage: Stage) -> None:
    """The runtime package as ``ebrt`` and the entry script, into ``stage.app``."""
    shutil.copytree(
        RUNTIME_SRC,
        stage.app / RUNTIME_PACKAGE,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    stage.entry.write_text(ENTRY_SCRIPT)


class Backend(Protocol):
    # files and folders of edgebundle/backends/ its runners are made with (runners.sources_digest)
    SOURCES: tuple[str, ...]
    # Debian packages a build root needs for this backend (the toolchain receives them as data)
    APT_PACKAGES: tuple[str, ...]

    def prepare(self, stage: Stage) -> None: ...

    def command(self, python: str, stage: Stage) -> list[str]: ...

    def progress(self, stage: Stage, echo: Echo) -> LineHandler | None:
        """What turns the build command's output into progress lines (None: nothing worth it)."""
        ...

    def result(self, stage: Stage) -> Path: ...

    def finish(self, folder: Path) -> None: ...


BACKENDS: Final[dict[BackendName, Backend]] = {"pyinstaller": pyinstaller, "nuitka": nuitka}


def apt_packages(backend: BackendName) -> tuple[str, ...]:
    """The Debian packages a build root needs to build ``backend``'s runners: the backend's own and
    what the launcher at the front of every binary compiles with."""
    return tuple(sorted({*launcher.APT_PACKAGES, *BACKENDS[backend].APT_PACKAGES}))
