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
# Run at every start: finds the compiled modules of the packages finish() splits.
SPLIT_HOOK = "pyi_rth_edgebundle_split.py"

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
    # Pillow: GUI/toolkit bridges and codecs with big libraries of their own (not ImageMath and
    # _imagingmath, 0.1 MB: the GIF plugin imports them, for writing, and without them no GIF opens)
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
    # FreeType (libfreetype, harfbuzz): --annotate writes with Pillow's built-in bitmap font, and the
    # version check of its fonts is what imports packaging
    "PIL._imagingft",
    "packaging",
    # imported only on Windows
    "asyncio.windows_events",
    "asyncio.windows_utils",
    "asyncio.proactor_events",
    # needs multiprocessing (above)
    "concurrent.futures.process",
    # Pillow imports it only on Python < 3.10
    "typing_extensions",
)

# The binary runs in UTF-8 mode (``X utf8``, below): standard streams, file names, arguments and the
# environment are UTF-8 whatever the device's locale, so no codec is looked up for them. These are all
# the text codecs the runtime, Pillow and the standard library's modules in it name (JSON sniffs UTF-16
# and UTF-32); the others (0.5 MB of code pages) go. IDNA cannot load anyway without unicodedata.
CODECS = frozenset(
    {"aliases", "ascii", "latin_1", "utf_8", "utf_8_sig", "raw_unicode_escape", "unicode_escape"}
    | {"utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le"}
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Python 3.11's encodings package (the same list on every platform), less CODECS; and IDNA's stringprep.
UNUSED_CODECS = (
    *(
        f"encodings.{name}"
        for name in _words("""
    base64_codec big5 big5hkscs bz2_codec charmap cp037 cp1006 cp1026 cp1125 cp1140 cp1250 cp1251
    cp1252 cp1253 cp1254 cp1255 cp1256 cp1257 cp1258 cp273 cp424 cp437 cp500 cp720 cp737 cp775 cp850
    cp852 cp855 cp856 cp857 cp858 cp860 cp861 cp862 cp863 cp864 cp865 cp866 cp869 cp874 cp875 cp932
    cp949 cp950 euc_jis_2004 euc_jisx0213 euc_jp euc_kr gb18030 gb2312 gbk hex_codec hp_roman8 hz idna
    iso2022_jp iso2022_jp_1 iso2022_jp_2 iso2022_jp_2004 iso2022_jp_3 iso2022_jp_ext iso2022_kr
    iso8859_1 iso8859_10 iso8859_11 iso8859_13 iso8859_14 iso8859_15 iso8859_16 iso8859_2 iso8859_3
    iso8859_4 iso8859_5 iso8859_6 iso8859_7 iso8859_8 iso8859_9 johab koi8_r koi8_t koi8_u kz1048
    mac_arabic mac_croatian mac_cyrillic mac_farsi mac_greek mac_iceland mac_latin2 mac_roman
    mac_romanian mac_turkish mbcs oem palmos ptcp154 punycode quopri_codec rot_13 shift_jis
    shift_jis_2004 shift_jisx0213 tis_620 undefined utf_7 uu_codec zlib_codec
    """)
    ),
    "stringprep",
)

# What a binary without NumPy (LiteRT's C API) leaves out besides. Its Pillow is built with JPEG and
# zlib only (edgebundle/pins.toml), and it reads the formats cameras and people send, which are the
# formats that Pillow itself imports first and TIFF (preprocess.DECODES): the plugins of the others
# go (0.5 MB), so do datetime and calendar, which only Pillow's PDF writer and time.strptime import.
LEAN_EXCLUDES = (
    *(
        f"PIL.{name}ImagePlugin"
        for name in _words("""
    Blp Cur Dcx Dds Eps Fits Fli Fpx Ftex Gbr Icns Ico Im Imt Iptc Jpeg2K McIdas Mic Mpeg Msp Palm Pcd
    Pcx Pdf Pixar Psd Qoi Sgi Spider Sun Tga Wmf XVThumb Xbm Xpm
    """)
    ),
    *("PIL.BufrStubImagePlugin", "PIL.GribStubImagePlugin", "PIL.Hdf5StubImagePlugin"),
    *("PIL.PdfParser", "PIL.ImageDraw2"),
    *("datetime", "_datetime", "_strptime", "calendar"),
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
        # UTF-8 mode, whatever the device's locale (see CODECS)
        "--python-option",
        "X utf8",
        "--additional-hooks-dir",
        str(hooks_dir(stage)),
        "--paths",
        str(stage.app),
        "--hidden-import",
        stage.interpreter_module,
    ]
    argv += ["--runtime-hook", str(hooks_dir(stage) / SPLIT_HOOK)]
    if stage.numpy:
        # NumPy's unused subpackages imported lazily, numpy.random left out (see the hook's docstring)
        argv += ["--runtime-hook", str(hooks_dir(stage) / "pyi_rth_edgebundle_numpy.py")]
    else:
        # LiteRT's C API (hook-ebrt.litert.py brings its library): no NumPy, nor what needs it
        argv += [arg for module in (*WITH_NUMPY, *LEAN_EXCLUDES) for arg in ("--exclude-module", module)]
    if stage.strip:
        argv.append("--strip")
    for module in (*EXCLUDES, *UNUSED_CODECS):
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
    device's first start (each costs 0.1-0.3 ms there, more the more there are), and zipimport reads
    them as fast as files. A package whose compiled extensions all sit in its top folder (Pillow's)
    goes there too, but for those, which stay in the folder (the SPLIT_HOOK run-time hook finds them);
    one with compiled extensions deeper (NumPy, the tflite-runtime interpreter) stays as it is."""
    internal = folder / "_internal"
    target = folder / LIBRARY_ZIP
    if target.exists():
        raise FileExistsError(f"{target}: expected PyInstaller's --debug noarchive layout")
    members = [
        p
        for p in sorted(internal.iterdir())
        if not p.is_symlink()
        and ((p.is_file() and p.suffix == ".pyc") or (p.is_dir() and _zippable_package(p)))
    ]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        for member in members:
            for path in [member] if member.is_file() else sorted(member.rglob("*.pyc")):
                # a fixed timestamp: the same modules give the same bytes (and the same runner key)
                info = zipfile.ZipInfo(path.relative_to(internal).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                z.writestr(info, path.read_bytes())
    for member in members:
        if member.is_file():
            member.unlink()
        elif not any(p.suffix == ".so" for p in member.iterdir()):
            shutil.rmtree(member)
        else:
            for path in sorted(member.rglob("*.pyc"), reverse=True):
                path.unlink()
            for sub in sorted((p for p in member.rglob("*") if p.is_dir()), reverse=True):
                sub.rmdir()


def _zippable_package(folder: Path) -> bool:
    """A regular package holding nothing but bytecode (and its subpackages), besides compiled
    extensions in its top folder."""
    if not (folder / "__init__.pyc").is_file():
        return False
    return all(
        p.is_dir()
        or (not p.is_symlink() and (p.suffix == ".pyc" or (p.suffix == ".so" and p.parent == folder)))
        for p in folder.rglob("*")
    )
