"""PyInstaller ``--onedir``: the runner's folder (the launcher in front of it is what makes one file).

Not ``--onefile``: its bootloader unpacks the whole archive to /tmp on every start, which is most of
its start-up time, and a SIGKILLed run leaves that copy behind. The folder is unpacked once per
content hash by the launcher (edgebundle/launcher/launcher.c) and then started directly.

What is left out, and why each costs: every module or library in the folder is bytes in the binary
(and, if imported, milliseconds at every start). The runtime needs the standard library's basics,
NumPy's core, Pillow's core with the common image formats, and the interpreter package.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..proc import Echo, LineHandler
    from . import Stage

HOOKS = Path(__file__).resolve().parent / "pyinstaller_hooks"
# What a runner of this backend is made with, besides the common modules (runners.sources_digest).
SOURCES: tuple[str, ...] = ("pyinstaller.py", HOOKS.name)
# What a Debian build root needs besides its Python, binutils and patchelf (toolchains/debroot.py):
# nothing; PyInstaller arrives by pip.
APT_PACKAGES: tuple[str, ...] = ()
# The frozen program's first sys.path entry, which PyInstaller leaves absent with --debug noarchive.
LIBRARY_ZIP = "_internal/base_library.zip"
# Pure-Python packages that stay files: the runtime finds its bundle directory next to its package.
KEEP_AS_FILES = frozenset({"ebrt"})

# Modules the runtime never uses but that the standard library, NumPy or Pillow can drag in.
EXCLUDES = (
    "ebrt.buildtime",
    # development and GUI parts of the standard library
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
    # its run-time hook (pyi_rth_multiprocessing) would run at every start; the runtime uses threads
    "multiprocessing",
    # Unicode database (1.1 MB): only IDNA host names and \N{...} escapes need it
    "unicodedata",
    # East Asian codecs (0.9 MB), loaded only for those encodings
    "_multibytecodec",
    "_codecs_cn",
    "_codecs_hk",
    "_codecs_iso2022",
    "_codecs_jp",
    "_codecs_kr",
    "_codecs_tw",
    # URL fetching, mail and XML, which only lazy imports in NumPy (np.load of a URL), shutil and
    # Pillow (XMP as a tree) reach
    "urllib.request",
    "http",
    "email",
    "ftplib",
    "xmlrpc",
    "xml",
    "pyexpat",
    "_elementtree",
    "tarfile",
    "gzip",
    "csv",
    "importlib.metadata",
    "getpass",
    # the pure-Python fallback of decimal (its C version _decimal is there)
    "_pydecimal",
    # TLS and OpenSSL (libssl + libcrypto, ~5 MB): hashlib falls back to its built-in sha256
    "ssl",
    "_ssl",
    "_hashlib",
    # compression formats nobody feeds the runtime (libbz2, liblzma)
    "bz2",
    "_bz2",
    "lzma",
    "_lzma",
    # NumPy parts the runtime never calls (numpy.random: 2.5 MB of compiled generators; numpy.linalg's
    # compiled half: LAPACK, 3.6 MB of lapack_lite on x86_64, and with Debian's NumPy in an arm64
    # root liblapack.so.3 + libgfortran, 7 MB, 2.4 MB of the binary; a stand-in says so if one is
    # ever used, see pyinstaller_hooks/pyi_rth_edgebundle_numpy.py)
    "numpy.random",
    "numpy.linalg._umath_linalg",
    "numpy.linalg.lapack_lite",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
    "numpy.array_api",
    # Pillow: GUI/toolkit bridges and codecs with big libraries of their own
    "PIL.ImageTk",
    "PIL.ImageQt",
    "PIL.ImageShow",
    "PIL._avif",
    "PIL.AvifImagePlugin",
    "PIL._webp",
    "PIL.WebPImagePlugin",
    "PIL._imagingcms",
    "PIL.ImageCms",
    "PIL._imagingtk",
    "PIL._imagingmath",
    "PIL.ImageMath",
    # FreeType (libfreetype, harfbuzz): --annotate writes with Pillow's built-in bitmap font
    "PIL._imagingft",
)


# What a binary without NumPy leaves out (only the interpreter packages' Python APIs import it).
WITH_NUMPY = ("numpy",)


def command(python: str, stage: Stage) -> list[str]:
    argv = [
        # PyInstaller's binary cache is per user (~/.cache/pyinstaller) and --clean empties it: two
        # builds at once (two targets, two CI jobs on one machine) would delete each other's files
        # ("... is not a valid file!"). Each build gets its own, inside its private staging directory.
        "env",
        f"PYINSTALLER_CONFIG_DIR={stage.workdir / 'pyinstaller-config'}",
        python,
        "-m",
        "PyInstaller",
        "--onedir",
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
        # Modules as plain .pyc files in the folder rather than a zlib archive inside the program:
        # zstd then compresses them all together (1.5 MB less), and imports skip a zlib inflate each.
        "--debug",
        "noarchive",
        # No docstrings or asserts in the bytecode: NumPy's docstrings alone are megabytes.
        "--optimize",
        "2",
        "--additional-hooks-dir",
        str(hooks_dir(stage)),
        "--paths",
        str(stage.app),
        "--hidden-import",
        stage.interpreter_module,
    ]
    if stage.numpy:
        # NumPy's unused subpackages imported lazily, numpy.random left out (see the hook's docstring)
        argv += ["--runtime-hook", str(hooks_dir(stage) / "pyi_rth_edgebundle_numpy.py")]
    else:
        # LiteRT's C API (hook-ebrt.litert.py brings its library): no NumPy, nor what needs it
        argv += [arg for module in WITH_NUMPY for arg in ("--exclude-module", module)]
    if stage.strip:
        argv.append("--strip")
    for module in EXCLUDES:
        argv += ["--exclude-module", module]
    argv.append(str(stage.entry))
    return argv


def hooks_dir(stage: Stage) -> Path:
    """Our hooks, copied into the stage (a build root sees only the stage)."""
    return stage.workdir / "pyinstaller-hooks"


def prepare(stage: Stage) -> None:
    shutil.copytree(HOOKS, hooks_dir(stage), ignore=shutil.ignore_patterns("__pycache__"))


def result(stage: Stage) -> Path:
    """The one-folder program: ``run`` and its ``_internal`` directory."""
    return stage.workdir / "dist" / stage.name


def progress(stage: Stage, echo: Echo) -> LineHandler | None:
    """PyInstaller builds a runner in ~30 s: no progress needed."""
    return None


def finish(folder: Path) -> None:
    """Move the pure-Python modules (top-level ``.pyc`` files and packages of nothing else) into
    ``_internal/base_library.zip``, stored uncompressed: one file instead of ~300 to create on a
    device's first start (each costs ~0.1 ms there), and zipimport reads them as fast as files.
    Packages with compiled extensions (NumPy, Pillow, the interpreter) stay as they are."""
    internal = folder / "_internal"
    target = folder / LIBRARY_ZIP
    if target.exists():
        raise FileExistsError(f"{target}: expected PyInstaller's --debug noarchive layout")
    members = [
        p
        for p in sorted(internal.iterdir())
        if not p.is_symlink()
        and (
            (p.is_file() and p.suffix == ".pyc")
            or (p.is_dir() and p.name not in KEEP_AS_FILES and _pure_package(p))
        )
    ]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        for member in members:
            for path in [member] if member.is_file() else sorted(member.rglob("*.pyc")):
                # a fixed timestamp: the same modules give the same bytes (and the same runner key)
                info = zipfile.ZipInfo(path.relative_to(internal).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                z.writestr(info, path.read_bytes())
    for member in members:
        if member.is_dir():
            shutil.rmtree(member)
        else:
            member.unlink()


def _pure_package(folder: Path) -> bool:
    """A regular package holding nothing but bytecode (and its subpackages)."""
    if not (folder / "__init__.pyc").is_file():
        return False
    return all(p.is_dir() or (p.suffix == ".pyc" and not p.is_symlink()) for p in folder.rglob("*"))
