"""The C library a runner carries, so that a binary needs none on the device (the default).

A backend's one-folder program leaves out the C library (glibc, its loader ld.so and their pieces:
libm, libdl, libpthread, ...), as PyInstaller and Nuitka do, so it runs only where the device's glibc
is at least the build environment's. Bundled instead (staticx's approach):

- every library the folder needs but does not hold is copied from the build environment into
  ``LIBDIR`` (the C library and its loader, and anything else left out);
- the entry program's loader (PT_INTERP) becomes a placeholder, ``INTERP_MAGIC`` + the loader's
  path inside the runner, padded to ``INTERP_SPACE`` bytes: the launcher writes the absolute path of
  the unpacked loader there when it unpacks the runner (once per content hash, launcher.c), so the
  kernel starts our ld.so, never the device's;
- the entry program gets a DT_RPATH of ``$ORIGIN/LIBDIR`` (searched before LD_LIBRARY_PATH, for
  every library of the process that has no DT_RUNPATH of its own) and needs every bundled library
  (DT_NEEDED): they are loaded at start, so a later lookup by soname, even from a library with a
  DT_RUNPATH, finds them loaded and never reaches the device's /etc/ld.so.cache.

``--system-libc`` skips all of it: the binary needs the device's glibc, at least the floor of the
build environment, and is ~1.2 MB smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..elf import ElfInfo, NotElfError, read_elf
from ..errors import BuildError
from ..proc import TIMEOUT_S
from ..target import Arch
from ..toolchains import Toolchain

LibcMode = Literal["bundled", "system"]
LIBC_MODES: tuple[LibcMode, ...] = ("bundled", "system")
LIBDIR = "_libc"
INTERP_MAGIC = "/edgebundle-interp:"  # launcher.c: EB_INTERP_MAGIC; not "@..." (patchelf reads @FILE)
INTERP_SPACE = 1024  # bytes reserved for the loader's absolute path on the device, NUL included
# Where the build environment's libraries are, in the order its loader searches them (Debian's
# multiarch directories first; /lib64 for other distributions).
TRIPLETS: dict[Arch, str] = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}

# Run inside the toolchain: copy each named library (following links) into DEST, print where it was.
COPY_SCRIPT = r"""
import os, shutil, sys
dest, dirs, names = sys.argv[1], sys.argv[2].split(":"), sys.argv[3:]
for name in names:
    for d in dirs:
        src = os.path.join(d, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(dest, name))
            print(name, os.path.realpath(src))
            break
    else:
        print(name, "-")
"""


@dataclass(frozen=True)
class BundledLibc:
    """What ``bundle`` put into a runner."""

    glibc: str  # "2.36"
    kernel_floor: str  # "3.2.0": the bundled libc's ABI tag, the oldest Linux it starts on
    files: tuple[str, ...]  # in LIBDIR

    def to_json(self) -> dict[str, object]:
        return {"glibc": self.glibc, "kernel_floor": self.kernel_floor, "files": list(self.files)}


def library_dirs(arch: Arch) -> list[str]:
    triplet = TRIPLETS[arch]
    return [f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]


def placeholder(loader: str) -> str:
    """The PT_INTERP text the launcher replaces: magic, the loader's path in the runner, padding."""
    text = f"{INTERP_MAGIC}{LIBDIR}/{loader}:"
    return text + "#" * (INTERP_SPACE - 1 - len(text))


def elf_files(folder: Path) -> dict[Path, ElfInfo]:
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                found[path] = read_elf(path)
            except NotElfError:
                continue
    return found


def missing_libraries(elves: dict[Path, ElfInfo]) -> set[str]:
    """Sonames some file needs that no file of the folder provides (by file name or DT_SONAME)."""
    provided = {p.name for p in elves} | {e.soname for e in elves.values() if e.soname}
    needed = {name for e in elves.values() for name in e.needed}
    return needed - provided


def bundle(toolchain: Toolchain, folder: Path, entry: str, arch: Arch, log: Path) -> BundledLibc:
    """Make ``folder`` (a backend's one-folder program, entry program ``entry``) carry its C library."""
    program = folder / entry
    info = read_elf(program)
    if info.interp is None:
        raise BuildError(f"{program}: has no program interpreter (PT_INTERP); cannot bundle its C library")
    loader = Path(info.interp.path.decode()).name
    libdir = folder / LIBDIR
    libdir.mkdir()
    elves = elf_files(folder)
    wanted = missing_libraries(elves) | {loader}
    copied: set[str] = set()
    while wanted - copied:
        batch = sorted(wanted - copied)
        out = toolchain.run(
            [toolchain.python, "-c", COPY_SCRIPT, str(libdir), ":".join(library_dirs(arch)), *batch],
            log=log,
            what="copying the C library into the runner",
            timeout=TIMEOUT_S["model probe"],  # a Python start, under QEMU for a foreign root
            cwd=folder,  # what a build root sees of the host
        )
        where = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        absent = [name for name in batch if where.get(name, "-") == "-"]
        if absent:
            raise BuildError(
                f"the runner needs {', '.join(absent)}, which the build environment does not have in "
                f"{', '.join(library_dirs(arch))} (build with --system-libc to leave the C library out)"
            )
        copied |= set(batch)
        elves |= {libdir / name: read_elf(libdir / name) for name in batch}  # only the new files
        wanted |= missing_libraries(elves)
    libc = read_elf(libdir / "libc.so.6") if (libdir / "libc.so.6").is_file() else None
    if libc is None or libc.glibc_version is None or libc.kernel_floor is None:
        raise BuildError(f"{folder}: the program does not use glibc (no libc.so.6); use --system-libc")
    for lib in libdir.iterdir():
        lib.chmod(0o755)
    preload = sorted(name for name in copied if name != loader and name not in info.needed)
    _patch(toolchain, program, loader, preload, info, log)
    return BundledLibc(
        glibc=".".join(map(str, libc.glibc_version)),
        kernel_floor=".".join(map(str, libc.kernel_floor)),
        files=tuple(sorted(copied)),
    )


def _patch(
    toolchain: Toolchain, program: Path, loader: str, preload: list[str], info: ElfInfo, log: Path
) -> None:
    """``program`` (as ``info`` read it before) gets the placeholder loader, the preloads and the
    search path."""
    # One change per patchelf run: patchelf 0.14 (Debian 12) writes a wrong DT_RPATH when
    # --add-needed and --set-rpath are given together.
    rpath = info.rpath.split(":") if info.rpath else []
    search = ":".join([f"$ORIGIN/{LIBDIR}", *rpath, *_dirs_of(program.parent, info.needed)])
    steps = [["--set-interpreter", placeholder(loader)]]
    if preload:
        steps.append([arg for name in preload for arg in ("--add-needed", name)])
    steps.append(["--force-rpath", "--set-rpath", search])
    for args in steps:
        toolchain.run(
            ["patchelf", *args, str(program)],
            log=log,
            what="pointing the runner at its own C library",
            timeout=TIMEOUT_S["compile"],
            cwd=program.parent,
        )
    info = read_elf(program)
    if info.interp is None or not info.interp.path.startswith(INTERP_MAGIC.encode()):
        raise BuildError(f"{program}: patchelf did not set the loader placeholder")


def _dirs_of(folder: Path, needed: tuple[str, ...]) -> list[str]:
    """The directories of ``folder`` that hold a library of ``needed`` ($ORIGIN-relative, the program
    being at the top): PyInstaller puts libz, which its bootloader needs, in _internal/."""
    dirs: list[str] = []
    for name in needed:
        for hit in sorted(folder.rglob(name)):
            rel = hit.parent.relative_to(folder).as_posix()
            entry = "$ORIGIN" if rel == "." else f"$ORIGIN/{rel}"
            if hit.parent.name != LIBDIR and entry not in dirs:
                dirs.append(entry)
    return dirs
