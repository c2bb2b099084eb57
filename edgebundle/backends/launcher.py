"""The C launcher at the front of every binary (edgebundle/launcher/launcher.c: find or unpack the
runner in a per-user cache, exec it), compiled for the target inside the build's toolchain.

It is a static program, linked with musl and zstd, so that it starts on any Linux whatever C library
the device has, or none (the runner brings its own glibc, backends/libc.py): ~300 kB, where a static
glibc one is ~900 kB. It is compiled inside the toolchain so that a
build root of another architecture compiles it for its own: the toolchain needs musl's compiler
wrapper and libzstd's static library (Debian: musl-tools libzstd-dev).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import BuildError, ToolMissingError
from ..proc import TIMEOUT_S
from ..target import Arch
from ..toolchains import Toolchain
from .libc import TRIPLETS

SOURCE_DIR = Path(__file__).resolve().parent.parent / "launcher"
SOURCES = ("launcher.c", "eb_format.h")
# What a Debian build root needs to compile it.
APT_PACKAGES = ("musl-tools", "libzstd-dev")


def command(cc: str, source_dir: Path, out: Path, arch: Arch) -> list[str]:
    """Size over speed (it runs for well under a millisecond); static, stripped. musl's headers come
    first; /usr/include only after them, for zstd.h. libzstd.a by its path: a -L would let the link
    find glibc's libc.a before musl's."""
    return [
        cc,
        "-Os",
        "-Wall",
        "-Wextra",
        "-static",
        "-s",
        "-idirafter",
        "/usr/include",
        "-o",
        str(out),
        str(source_dir / "launcher.c"),
        f"/usr/lib/{TRIPLETS[arch]}/libzstd.a",
    ]


def build(toolchain: Toolchain, workdir: Path, log: Path, arch: Arch) -> Path:
    """Compile the launcher in ``workdir`` (visible inside the toolchain) and return its path."""
    src = workdir / "launcher-src"
    src.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        shutil.copyfile(SOURCE_DIR / name, src / name)
    out = workdir / "launcher"
    try:
        toolchain.run(
            command("musl-gcc", src, out, arch),
            log=log,
            what="compiling the launcher",
            timeout=TIMEOUT_S["compile"],
            cwd=workdir,
        )
    except BuildError as exc:
        if "zstd" in str(exc) or "musl-gcc" in str(exc):
            raise ToolMissingError(
                f"compiling the launcher needs musl's compiler wrapper and zstd's static library "
                f"(Debian: apt-get install {' '.join(APT_PACKAGES)}): {exc}"
            ) from None
        raise
    return out
