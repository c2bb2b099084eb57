"""PyInstaller ``--onefile``: the bootloader unpacks the archive to a temporary directory per run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Stage

# Modules the runtime never uses but that the standard library or NumPy/Pillow hooks can drag in.
# Each costs bytes in the binary and unpacking time at every start.
EXCLUDES = (
    "ebrt.buildtime",
    "tkinter",
    "_tkinter",
    "unittest",
    "pydoc",
    "doctest",
    "pdb",
    "lib2to3",
    "idlelib",
    "test",
    "setuptools",
    "pip",
    "distutils",
    "IPython",
    "matplotlib",
    "PIL.ImageTk",
    "PIL.ImageQt",
    "PIL.ImageShow",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
)


def command(python: str, stage: Stage) -> list[str]:
    argv = [
        python,
        "-m",
        "PyInstaller",
        "--onefile",
        "--noconfirm",
        "--clean",
        "--log-level",
        "WARN",
        "--name",
        stage.name,
        "--distpath",
        str(stage.workdir / "dist"),
        "--workpath",
        str(stage.workdir / "pyinstaller"),
        "--specpath",
        str(stage.workdir),
        "--paths",
        str(stage.app),
        "--hidden-import",
        stage.interpreter_module,
        # numpy.random imports it from compiled code, which PyInstaller cannot see once the
        # excludes below drop the modules that usually pull it in.
        "--hidden-import",
        "secrets",
    ]
    if stage.strip:
        argv.append("--strip")
    for path in stage.data_files():
        argv += ["--add-data", f"{path}:."]
    for module in EXCLUDES:
        argv += ["--exclude-module", module]
    argv.append(str(stage.entry))
    return argv


def result(stage: Stage) -> Path:
    return stage.workdir / "dist" / stage.name
