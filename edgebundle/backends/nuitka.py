"""Nuitka ``--standalone``: the runtime, the standard library, NumPy and Pillow compiled to C, as the
runner's one-folder program (the launcher in front of it makes one file; see runners.py).

Not ``--onefile``: Nuitka's onefile launcher decompresses its whole payload in memory on every start
(161 MB RSS, 3.9x the plain script's start-up measured here; 2.5x even with a cached temp dir, since
it still checks every file). Our launcher unpacks the folder once per content hash and execs it, so a
warm start is the standalone folder's own (0.89x the plain script measured here).

Compiling C under QEMU is far too slow (an arm64 build was still compiling after 30 minutes), so an
arm64 runner is built on a native arm64 host only (plan.check_native_only, and ``edgebundle matrix``).

Nuitka's caches (bytecode, DLL dependencies) and ccache's live under edgebundle's cache directory:
a repeat build of the same runtime recompiles nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..runner import which
from ..toolchains import cache_dir
from .pyinstaller import EXCLUDES as PYINSTALLER_EXCLUDES

if TYPE_CHECKING:
    from . import Stage

# What PyInstaller leaves out, Nuitka does not compile either (numpy.random included: the same
# run-time hook gives it a stand-in, see prepare), except multiprocessing (Nuitka's always-on plugin of
# that name insists on deciding about it; it costs nothing unless imported).
NOT_EXCLUDED = frozenset({"multiprocessing"})
# PyInstaller's run-time hook, run first by the entry script here: NumPy's unused subpackages are
# imported lazily and numpy.random is a stand-in (time and memory at every start).
NUMPY_HOOK = Path(__file__).resolve().parent / "pyinstaller_hooks" / "pyi_rth_edgebundle_numpy.py"
NOFOLLOW = (
    *(m for m in PYINSTALLER_EXCLUDES if m not in NOT_EXCLUDED),
    # the builder and its CLI, should anything reach them
    "edgebundle",
    "click",
    # test suites inside any package
    "*.tests",
    "*.test",
    "numpy.conftest",
)
# Imported from C, which Nuitka cannot see: by NumPy's bit generators (secrets) and by os.wait4 for
# its rusage result (resource; the --eb-measure modes wait for runs with it).
INCLUDES = ("secrets", "resource")
# Nuitka's own anti-bloat, on by default: these ask it to cut the imports of test and build tools
# out of the modules that have them rather than fail or drag them in.
ANTI_BLOAT = (
    "--noinclude-pytest-mode=nofollow",
    "--noinclude-setuptools-mode=nofollow",
    "--noinclude-unittest-mode=nofollow",
    "--noinclude-IPython-mode=nofollow",
    "--noinclude-dask-mode=nofollow",
)
PYTHON_FLAGS = (
    "no_site",  # the folder has no site-packages; site would only scan for .pth files
    "no_docstrings",  # NumPy's docstrings alone are megabytes (PyInstaller's --optimize 2 does the same)
    "no_asserts",
    "no_warnings",
)
TOOLS = ("gcc", "patchelf")
FOLDER = "program"  # Nuitka writes FOLDER.build (C sources, objects) and FOLDER.dist (the result)


def cache_root() -> Path:
    """Nuitka's caches and ccache's, kept with edgebundle's other caches."""
    return cache_dir() / "nuitka"


def jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def command(python: str, stage: Stage) -> list[str]:
    caches = cache_root()
    argv = [
        # Nuitka prints its errors (and the C compiler's) on stdout, its options on stderr: one stream,
        # so that a failure's message ends with its last lines (the full output is in the log).
        "sh",
        "-c",
        'exec "$@" 2>&1',
        "nuitka",
        # Through env(1): Nuitka reads where its caches go from the environment only.
        "env",
        f"NUITKA_CACHE_DIR={caches}",
        f"CCACHE_DIR={caches / 'ccache'}",
        python,
        "-m",
        "nuitka",
        "--standalone",
        "--assume-yes-for-downloads",
        f"--output-dir={stage.workdir / 'nuitka'}",
        f"--output-filename={stage.name}",
        f"--output-folder-name={FOLDER}",
        f"--jobs={jobs()}",
        # Link-time optimisation doubles the C compile time for a few per cent of speed in code
        # whose hot loops are in NumPy and the interpreter, which Nuitka does not compile.
        "--lto=no",
        f"--include-module={stage.interpreter_module}",
        *(f"--include-module={m}" for m in INCLUDES),
        *(f"--nofollow-import-to={m}" for m in NOFOLLOW),
        *ANTI_BLOAT,
        *(f"--python-flag={flag}" for flag in PYTHON_FLAGS),
    ]
    if not stage.strip:
        argv.append("--unstripped")
    argv.append(str(stage.entry))
    return argv


def prepare(stage: Stage) -> None:
    """Nuitka compiles with the host's C compiler and rewrites RPATHs with patchelf: say how to get
    them before minutes of work, not after."""
    for tool in TOOLS:
        which(tool)
    cache_root().mkdir(parents=True, exist_ok=True)
    stage.entry.write_text(NUMPY_HOOK.read_text() + "\n" + stage.entry.read_text())


def result(stage: Stage) -> Path:
    """The standalone folder: ``run`` and everything it loads, next to it."""
    return stage.workdir / "nuitka" / f"{FOLDER}.dist"


def finish(folder: Path) -> None:
    """Nothing to rearrange: Nuitka's folder holds compiled code and shared libraries only."""
