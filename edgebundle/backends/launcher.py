"""The C launcher at the front of every binary (edgebundle/launcher/launcher.c: find or unpack the
runner in a per-user cache, exec it), compiled for the target inside the build's toolchain.

It links zstd statically (the device needs nothing but glibc, which the runner needs anyway) and is
compiled inside the toolchain so that a build root of another architecture compiles it for its own:
the toolchain needs a C compiler and libzstd's static library (Debian: gcc libc6-dev libzstd-dev).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import BuildError, ToolMissingError
from ..proc import TIMEOUT_S
from ..toolchains import Toolchain

SOURCE_DIR = Path(__file__).resolve().parent.parent / "launcher"
SOURCES = ("launcher.c", "eb_format.h")
# What a Debian build root needs to compile it.
APT_PACKAGES = ("gcc", "libc6-dev", "libzstd-dev")


def command(cc: str, source_dir: Path, out: Path) -> list[str]:
    """Size over speed (it runs for well under a millisecond); stripped; zstd linked in statically."""
    return [
        cc,
        "-Os",
        "-Wall",
        "-Wextra",
        "-D_FORTIFY_SOURCE=2",
        "-s",
        "-o",
        str(out),
        str(source_dir / "launcher.c"),
        "-l:libzstd.a",
    ]


def build(toolchain: Toolchain, workdir: Path, log: Path) -> Path:
    """Compile the launcher in ``workdir`` (visible inside the toolchain) and return its path."""
    src = workdir / "launcher-src"
    src.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        shutil.copyfile(SOURCE_DIR / name, src / name)
    out = workdir / "launcher"
    try:
        toolchain.run(
            command("gcc", src, out),
            log=log,
            what="compiling the launcher",
            timeout=TIMEOUT_S["compile"],
            cwd=workdir,
        )
    except BuildError as exc:
        if "zstd" in str(exc):
            raise ToolMissingError(
                f"compiling the launcher needs zstd's static library and header "
                f"(Debian: apt-get install {' '.join(APT_PACKAGES)}): {exc}"
            ) from None
        raise
    return out
