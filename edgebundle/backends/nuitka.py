"""Nuitka ``--standalone``: the runtime and the interpreter's wrapper compiled to C; the standard
library, NumPy and Pillow as bytecode in the same executable; as the runner's one-folder program (the
launcher in front of it makes one file; see runners.py).

Not ``--onefile``: Nuitka's onefile launcher decompresses its whole payload in memory on every start
(161 MB RSS, 3.9x the plain script's start-up measured here; 2.5x even with a cached temp dir, since
it still checks every file). Our launcher unpacks the folder once per content hash and execs it, so a
warm start is the standalone folder's own (the figures: benchmarks/results/compare.md).

Memory: Nuitka keeps every constant, and the bytecode of every module it does not compile, in one blob
inside the executable (``.rodata``, by ``incbin`` on Linux). Nothing checksums it, but at start-up
``loadConstantsBlob(".bytecode")`` (HelpersConstantsBlob.c, from setupMetaPathBasedLoader) walks the
tag and length of every bytecode entry to fill its table of pointers, and each compiled module finds
its constants by walking the name/length headers of all blobs before its own. That touches a page per
module, and the kernel maps the 64 kB around each touched page of a cached file (fault-around): the
whole blob is resident from the start, imported or not. Compiled code costs the same way, several
times over. So: NumPy and Pillow as bytecode (BYTECODE), the standard library's unused modules out
(UNUSED_STDLIB), Nuitka's own C compiled for size (-Os), and our plugin (nuitka_plugin/) links in
release_bytecode.c, which unmaps the bytecode section's pages again after the walk and after each
module read from it (they are clean pages of a read-only file mapping: a later read maps them again
from the page cache), and defer_inspect.c, which moves Nuitka's start-up patch of inspect (an import
of inspect, dis and opcode that the image modes never need) to inspect's first import; measured in
benchmarks/results/nuitka-rss.md.

Without NumPy (the litert interpreter, target x86_64-lean: LiteRT's C API through ctypes): NumPy and
the runtime's modules that use it are not followed, nor is NumPy's run-time hook run, and our plugin
carries the wheel's libLiteRt.so as a DLL at ai_edge_litert/ in the folder (the program's folder is its
sys.path entry, where runtime/litert.py looks), so that Nuitka scans its needs and libc.py bundles its
libstdc++ and libgcc_s. Warm start 0.34x the hand-written plain script's (benchmarks/results/nuitka-lean.md).

Compiling C under QEMU is far too slow (an arm64 build was still compiling after 30 minutes), so an
arm64 runner is built on a native arm64 host only (plan.check_native, and ``edgebundle matrix``).

Nuitka's caches (bytecode, DLL dependencies) and ccache's live under edgebundle's cache directory:
a repeat build of the same runtime recompiles nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..proc import Echo, LineHandler, which
from ..toolchains import cache_dir
from .pyinstaller import EXCLUDES as PYINSTALLER_EXCLUDES
from .pyinstaller import SOURCES as PYINSTALLER_SOURCES
from .pyinstaller import WITH_NUMPY

if TYPE_CHECKING:
    from . import Stage

# What a Debian build root needs for Nuitka: it compiles against Python's and glibc's headers with gcc;
# ccache: a repeat build in the root recompiles nothing (its cache stays inside the root, which is kept).
APT_PACKAGES: tuple[str, ...] = ("gcc", "libc6-dev", "python3-dev", "ccache")

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
# Nuitka's standalone mode packs every module of the standard library that it can import, not only
# those the program imports (5.4 MB of bytecode, all of it resident, see above). Neither the runtime,
# in any mode, nor NumPy, Pillow or the interpreter wrapper import these, except from functions the
# runtime never calls (their sources parsed; fractions, colorsys and quopri stay: Pillow's TIFF plugin,
# which also reads every JPEG's EXIF, imports fractions at module level).
UNUSED_STDLIB = (
    *("_osx_support", "_pyio", "cgi", "cgitb", "chunk", "cmd", "code", "codeop", "configparser"),
    *("crypt", "difflib", "filecmp", "fileinput", "getopt", "graphlib"),
    *("html", "imaplib", "imghdr", "imp", "mailcap", "mimetypes", "modulefinder", "netrc", "pickletools"),
    *("pipes", "poplib", "pprint", "pstats", "py_compile", "pyclbr", "rlcompleter", "runpy", "sched"),
    *("sndhdr", "socketserver", "statistics", "symtable", "timeit", "tomllib", "trace", "tracemalloc"),
    *("uu", "webbrowser", "xdrlib"),
)
# Not compiled to C but kept as bytecode, as Nuitka keeps the standard library: compiled, their Python
# code is 13 MB of machine code, of which importing them touches 9 MB (peak RSS 57 MB for the
# face-sized model, PyInstaller's 38 MB); as bytecode it is 2.7 MB, and the C compile shrinks from 185
# files to 22. Their hot loops are C already (their extension modules, which Nuitka leaves alone).
BYTECODE = ("numpy", "PIL")
# Nuitka's anti-bloat configuration, for what no option covers (written next to the stage by prepare).
PACKAGE_CONFIG = """\
---
- module-name: 'numpy.core._add_newdocs'
  anti-bloat:
    - description: 'docstrings of the C functions of NumPy, 200 kB of strings that no_docstrings keeps'
      module_code: ''
"""
# Imported from C, which Nuitka cannot see: by NumPy's bit generators (secrets) and by os.wait4 for
# its rusage result (resource; the --eb-measure modes wait for runs with it).
INCLUDES = ("secrets", "resource")
NUMPY_INCLUDES = frozenset({"secrets"})
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
# Nuitka's progress bars want a terminal; on a pipe it is silent for minutes. --show-progress adds a
# line per module it optimises ("Optimizing module 'x', N more modules to go after that."),
# --show-scons one per C compiler command as Scons starts it: ``progress`` (below) turns them into a
# line every PROGRESS_EVERY_S, and passes Nuitka's own phase lines and warnings on.
PROGRESS_FLAGS = ("--show-progress", "--show-scons")
TOOLS = ("gcc", "patchelf")
# Our Nuitka plugin and the C files it links in (what each does: nuitka_plugin/*.c); copied next to
# the stage by prepare, as a build root sees only its own files.
PLUGIN_FILES = Path(__file__).resolve().parent / "nuitka_plugin"
PLUGIN = "edgebundle_nuitka.py"
# What a runner of this backend is made with, besides the common modules (runners.sources_digest):
# PyInstaller's files too, whose excludes and NumPy run-time hook it uses.
SOURCES: tuple[str, ...] = ("nuitka.py", PLUGIN_FILES.name, *PYINSTALLER_SOURCES)
# How the program is linked: release_bytecode.c stands between Nuitka's loader and the unmarshalling
# of each bytecode module; defer_inspect.c between Nuitka's start-up and its patch of inspect.
LDFLAGS = ("-Wl,--wrap=PyMarshal_ReadObjectFromString", "-Wl,--wrap=patchInspectModule")
# Relative relocations packed (DT_RELR) where the target's glibc floor allows (2.36, every shipped
# target's; elf.py counts it): the 0.95 MB of .rela.dyn the dynamic linker reads at every start
# become 20 kB.
RELR_LDFLAGS = ("-Wl,-z,pack-relative-relocs",)
# Nuitka's helpers and the compiled runtime for size: their machine code is nearly all resident (the
# kernel's fault-around again) and the hot loops are in NumPy and the interpreter library, not here:
# .text 3.9 -> 3.3 MB, peak RSS -0.6 MB, start-up and latency the same within this machine's noise
# (benchmarks/results/nuitka-rss.md).
CCFLAGS = ("-Os",)
FOLDER = "program"  # Nuitka writes FOLDER.build (C sources, objects) and FOLDER.dist (the result)


def ldflags(stage: Stage) -> tuple[str, ...]:
    return (*LDFLAGS, *RELR_LDFLAGS) if stage.pack_relocations else LDFLAGS


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
        "PYTHONUNBUFFERED=1",  # its lines as they happen (progress), not in blocks
        f"LDFLAGS={' '.join(ldflags(stage))}",
        f"CCFLAGS={' '.join(CCFLAGS)}",
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
        # whose hot loops are in the TFLite interpreter, NumPy or CPython's own list and bytes
        # operations (the plain-Python decoders), none of which Nuitka compiles.
        "--lto=no",
        f"--include-module={stage.interpreter_module}",
        *(f"--include-module={m}" for m in includes(stage)),
        *(f"--nofollow-import-to={m}" for m in nofollow(stage)),
        *ANTI_BLOAT,
        *(f"--noinclude-custom-mode={m}:bytecode" for m in bytecode(stage)),
        f"--user-package-configuration-file={package_config(stage)}",
        f"--user-plugin={stage.workdir / PLUGIN_FILES.name / PLUGIN}",
        *(f"--python-flag={flag}" for flag in PYTHON_FLAGS),
        *PROGRESS_FLAGS,
    ]
    if not stage.strip:
        argv.append("--unstripped")
    argv.append(str(stage.entry))
    return argv


def includes(stage: Stage) -> tuple[str, ...]:
    return INCLUDES if stage.numpy else tuple(m for m in INCLUDES if m not in NUMPY_INCLUDES)


def nofollow(stage: Stage) -> tuple[str, ...]:
    """What Nuitka neither compiles nor packs; a program without NumPy (the litert interpreter, whose
    library our plugin carries: nuitka_plugin/) also leaves out NumPy, as PyInstaller does
    (pyinstaller.WITH_NUMPY)."""
    return (*NOFOLLOW, *UNUSED_STDLIB, *(() if stage.numpy else WITH_NUMPY))


def bytecode(stage: Stage) -> tuple[str, ...]:
    return BYTECODE if stage.numpy else tuple(m for m in BYTECODE if m != "numpy")


def prepare(stage: Stage) -> None:
    """Nuitka compiles with the host's C compiler and rewrites RPATHs with patchelf: say how to get
    them before minutes of work, not after."""
    for tool in TOOLS:
        which(tool)
    cache_root().mkdir(parents=True, exist_ok=True)
    if stage.numpy:
        stage.entry.write_text(NUMPY_HOOK.read_text() + "\n" + stage.entry.read_text())
    package_config(stage).write_text(PACKAGE_CONFIG)
    shutil.copytree(
        PLUGIN_FILES, stage.workdir / PLUGIN_FILES.name, ignore=shutil.ignore_patterns("__pycache__")
    )


def package_config(stage: Stage) -> Path:
    return stage.workdir / "edgebundle.nuitka-package.config.yml"


def result(stage: Stage) -> Path:
    """The standalone folder: ``run`` and everything it loads, next to it."""
    return stage.workdir / "nuitka" / f"{FOLDER}.dist"


def finish(folder: Path) -> None:
    """Nothing to rearrange: Nuitka's folder holds compiled code and shared libraries only."""


# How often ``progress`` says how far a long phase is.
PROGRESS_EVERY_S = 30.0
_OPTIMIZING = re.compile(r"^Nuitka-Progress: Optimizing module '([^']+)', (\d+) more modules? to go")
_PASS = re.compile(r"^Nuitka-Progress: PASS (\d+):")
_COMPILING = re.compile(r'^"?\S*(?:ccache|gcc|clang|cc)"? .*-o \S+\.o -c ')
_PHASES = re.compile(
    r"^Nuitka: (Completed Python level|Generating source code|"
    r"Running data composer|Successfully created)"
    r"|^Nuitka-Scons: (Backend C linking|Compiled \d+ C files|Cached C files)"
    r"|:WARNING:"
)


# Warnings Nuitka prints on every build of ours that ask nothing of the user: it validates our package
# configuration only with jsonschema installed (its shape is tested instead); in a Debian root it warns
# about Debian's python3-numpy, whose system BLAS our plugin brings (tests/integration/test_isolated.py
# builds and runs that). Still in the log.
KNOWN_WARNINGS = (
    "Cannot validate schema due to lack of 'jsonschema' package.",
    "Standalone with Python package from Debian installation may not be working.",
    "Complex topic! More information can be found at",
)


class Progress:
    """An ``on_line`` handler for a Nuitka build: its phases as they come, and at most every
    ``every`` seconds how far the optimisation of modules or the C compile is."""

    def __init__(
        self,
        build_dir: Path,
        echo: Echo,
        *,
        clock: Callable[[], float] = time.monotonic,
        every: float = PROGRESS_EVERY_S,
    ) -> None:
        self.build_dir = build_dir
        self.echo = echo
        self.clock = clock
        self.every = every
        self.shown_at = clock()
        self.passes = 1
        self.optimized: set[str] = set()
        self.compiled = 0
        self.c_files = 0

    def __call__(self, line: str) -> None:
        if any(known in line for known in KNOWN_WARNINGS):
            return
        if found := _OPTIMIZING.match(line):
            self.optimized.add(found[1])
            done = len(self.optimized)
            self._throttled(f"nuitka: optimising modules (pass {self.passes}): {done} done, {found[2]} to go")
        elif found := _PASS.match(line):
            if int(found[1]) != self.passes:
                self.passes = int(found[1])
                self.optimized.clear()
        elif _COMPILING.match(line):
            self.compiled += 1
            total = f"/{self.c_files}" if self.c_files >= self.compiled else ""
            self._throttled(f"nuitka: compiling C: {self.compiled}{total} files started")
        elif line.startswith("Nuitka: Starting Python compilation"):
            self._show("nuitka: following imports and optimising modules (Python -> C)")
        elif line.startswith("Nuitka: Running C compilation via Scons."):
            # Every C file is written by now (the static helpers included), but for the one per
            # constants blob that Scons writes itself (Linux's default resource mode, incbin).
            blobs = sum(1 for _ in self.build_dir.glob("blobs/*.bin"))
            self.c_files = sum(1 for _ in self.build_dir.rglob("*.c")) + blobs
            self._show(f"nuitka: compiling {self.c_files} C files ({jobs()} at a time, ccache)")
        elif _PHASES.search(line):
            self._show("nuitka: " + line.split(": ", 1)[-1].strip())

    def _throttled(self, message: str) -> None:
        if self.clock() - self.shown_at >= self.every:
            self._show(message)

    def _show(self, message: str) -> None:
        self.shown_at = self.clock()
        self.echo(message)


def progress(stage: Stage, echo: Echo) -> LineHandler:
    """How the runner's build reports Nuitka's output while it runs (see runners.py)."""
    return Progress(result(stage).with_name(f"{FOLDER}.build"), echo)
