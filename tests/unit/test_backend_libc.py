"""Carrying the C library (edgebundle/backends/libc.py) on a real program compiled here: what is copied,
how the program is patched, and that the result runs with nothing but what the folder holds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgebundle.backends import libc
from edgebundle.elf import read_elf
from edgebundle.target import host_arch
from tests.conftest import in_ci

PROGRAM = r"""
#include <math.h>
#include <stdio.h>
int main(int argc, char **argv) { printf("%.3f\n", cos((double)argc - 1)); return 0; }
"""


LOADER = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}[host_arch()]


class LocalToolchain:
    """Runs commands on this host, as the host venv toolchain does, holding them to the Toolchain
    contract a Debian root needs: every path of the build a command uses is under its ``cwd`` (only
    that is visible inside a root)."""

    python = shutil.which("python3") or "python3"
    library_root = None

    def __init__(self, build_dir: Path) -> None:
        self.build_dir = build_dir

    def run(self, argv: list[str], *, cwd: Path | None = None, **_: object) -> str:
        for arg in argv:
            if arg.startswith(str(self.build_dir)):
                assert cwd is not None, f"{arg} used without a cwd"
                assert Path(arg).is_relative_to(cwd), f"{arg} is not under the command's cwd {cwd}"
        return subprocess.run(argv, capture_output=True, text=True, check=True, cwd=cwd).stdout


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    if shutil.which("gcc") is None or shutil.which("patchelf") is None:
        if in_ci():
            pytest.fail("CI must have gcc and patchelf")
        pytest.skip("needs gcc and patchelf")
    out = tmp_path / "dist"
    (out / "_internal").mkdir(parents=True)
    (tmp_path / "p.c").write_text(PROGRAM)
    subprocess.run(["gcc", "-O", "-o", str(out / "run"), str(tmp_path / "p.c"), "-lm"], check=True)
    return out


def test_placeholder_fills_the_reserved_space() -> None:
    text = libc.placeholder("ld-linux-x86-64.so.2")
    assert len(text) + 1 == libc.INTERP_SPACE
    assert text.startswith(f"{libc.INTERP_MAGIC}{libc.LIBDIR}/ld-linux-x86-64.so.2:")


def test_missing_libraries_are_what_the_folder_needs_but_lacks(folder: Path) -> None:
    assert libc.missing_libraries(libc.elf_files(folder)) == {"libm.so.6", "libc.so.6"}
    libm = next(
        Path(d) / "libm.so.6" for d in libc.library_dirs(host_arch()) if (Path(d) / "libm.so.6").exists()
    )
    shutil.copyfile(libm, folder / "_internal" / "libm.so.6")
    assert libc.missing_libraries(libc.elf_files(folder)) == {"libc.so.6", LOADER}  # what libm needs


def test_bundle_copies_the_closure_and_patches_the_program(folder: Path, tmp_path: Path) -> None:
    got = libc.bundle(LocalToolchain(tmp_path), folder, "run", host_arch(), tmp_path / "log")  # type: ignore[arg-type]
    assert set(got.files) == {"libc.so.6", "libm.so.6", LOADER}
    assert sorted(p.name for p in (folder / libc.LIBDIR).iterdir()) == sorted(got.files)
    release = subprocess.run(
        ["getconf", "GNU_LIBC_VERSION"], capture_output=True, text=True, check=True
    ).stdout
    assert got.glibc == release.split()[1]
    assert got.kernel_floor.count(".") == 2
    info = read_elf(folder / "run")
    assert info.interp is not None
    assert info.interp.path == libc.placeholder(LOADER).encode()
    assert info.rpath is not None
    assert info.rpath.split(":")[0] == f"$ORIGIN/{libc.LIBDIR}"
    assert set(info.needed) >= {"libc.so.6", "libm.so.6"}
    # What the launcher does at unpack time: its loader then runs it with the folder's libraries only.
    run = subprocess.run(
        [str(folder / libc.LIBDIR / LOADER), "--inhibit-cache", "--list", str(folder / "run")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("libc.so.6", "libm.so.6"):
        assert f"{name} => {folder / libc.LIBDIR / name}" in run
    out = subprocess.run(
        [str(folder / libc.LIBDIR / LOADER), str(folder / "run"), "x"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "0.540"
