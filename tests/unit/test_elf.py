"""The ELF reader against binutils' own reading of real system files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgebundle.elf import ElfInfo, NotElfError, audit_glibc, max_version, parse_elf, read_elf
from tests.conftest import MODELS

SYSTEM_FILES = [Path(p) for p in ("/bin/ls", "/usr/bin/ssh-keygen", "/usr/bin/objdump") if Path(p).exists()]


def objdump_versions(path: Path) -> set[str]:
    out = subprocess.run(["objdump", "-p", str(path)], capture_output=True, text=True, check=True).stdout
    section = out.split("Version References:", 1)[1] if "Version References:" in out else ""
    return set(re.findall(r"0x[0-9a-f]+ 0x\d+ \d+ (\S+)", section))


@pytest.mark.skipif(not shutil.which("objdump"), reason="binutils not installed")
@pytest.mark.parametrize("path", SYSTEM_FILES, ids=lambda p: p.name)
def test_versions_match_objdump(path: Path) -> None:
    info = read_elf(path)
    assert info.arch in {"x86_64", "aarch64"}
    assert info.needed_versions == objdump_versions(path)
    assert info.glibc_floor is not None


def test_not_elf_and_truncated(tmp_path: Path) -> None:
    with pytest.raises(NotElfError, match="not an ELF file"):
        read_elf(MODELS / "digits_float.tflite")
    head = SYSTEM_FILES[0].read_bytes()[:200]
    with pytest.raises(NotElfError, match="truncated or malformed"):
        parse_elf(head, Path("cut"))
    with pytest.raises(NotElfError, match="cannot read"):
        read_elf(tmp_path / "missing")


def test_audit_names_the_library_that_sets_the_floor(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not elf")
    audit = audit_glibc([*SYSTEM_FILES, text])
    assert text not in audit.per_file
    assert audit.floor == max(f for f in audit.per_file.values() if f)
    assert audit.culprit is not None
    assert audit.per_file[audit.culprit] == audit.floor
    assert audit.floor_text == f"{audit.floor[0]}.{audit.floor[1]}"


def test_version_ordering_is_numeric() -> None:
    assert max_version({"GLIBC_2.9", "GLIBC_2.17", "GLIBC_2.3.4", "GLIBCXX_3.4.30"}, "GLIBC_") == (2, 17)
    assert max_version(set(), "GLIBC_") is None


def test_an_abi_marker_counts_as_the_release_that_brought_it() -> None:
    relr = ElfInfo(Path("run"), "x86_64", frozenset({"GLIBC_2.34", "GLIBC_ABI_DT_RELR"}))
    assert relr.glibc_floor == (2, 36)
    newer = ElfInfo(Path("run"), "x86_64", frozenset({"GLIBC_2.38", "GLIBC_ABI_DT_RELR"}))
    assert newer.glibc_floor == (2, 38)
    assert ElfInfo(Path("x"), "x86_64", frozenset({"GLIBCXX_3.4.30"})).glibc_floor is None


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_a_program_linked_with_relr_needs_glibc_2_36(tmp_path: Path) -> None:
    source = tmp_path / "hello.c"
    source.write_text(
        '#include <stdio.h>\nstatic const char *p = "x";\nint main(void) { puts(p); return 0; }\n'
    )
    out = tmp_path / "hello"
    subprocess.run(
        ["gcc", "-O2", "-pie", "-fPIE", "-Wl,-z,pack-relative-relocs", "-o", str(out), str(source)],
        check=True,
    )
    info = read_elf(out)
    assert "GLIBC_ABI_DT_RELR" in info.needed_versions
    assert info.glibc_floor is not None
    assert info.glibc_floor >= (2, 36)


def readelf(path: Path, *args: str) -> str:
    return subprocess.run(["readelf", *args, str(path)], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not shutil.which("readelf"), reason="binutils not installed")
@pytest.mark.parametrize("path", SYSTEM_FILES, ids=lambda p: p.name)
def test_needed_soname_and_loader_match_readelf(path: Path) -> None:
    info = read_elf(path)
    dynamic = readelf(path, "-d")
    assert list(info.needed) == re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", dynamic)
    interp = re.search(r"Requesting program interpreter: (\S+)\]", readelf(path, "-l"))
    assert info.interp is not None
    assert interp is not None
    assert info.interp.path.decode() == interp.group(1)
    assert path.read_bytes()[info.interp.offset : info.interp.offset + info.interp.size].rstrip(b"\0") == (
        info.interp.path
    )


@pytest.mark.skipif(not shutil.which("readelf"), reason="binutils not installed")
def test_a_c_library_says_its_glibc_release_and_kernel_floor() -> None:
    libc = next(
        p
        for p in (Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/lib/aarch64-linux-gnu/libc.so.6"))
        if p.exists()
    )
    info = read_elf(libc)
    assert info.soname == "libc.so.6"
    release = subprocess.run(
        ["getconf", "GNU_LIBC_VERSION"], capture_output=True, text=True, check=True
    ).stdout
    assert info.glibc_version == max_version({f"GLIBC_{release.split()[1]}"}, "GLIBC_")
    tag = re.search(r"OS: Linux, ABI: (\d+)\.(\d+)\.(\d+)", readelf(libc, "-n"))
    assert tag is not None
    assert info.kernel_floor == tuple(int(x) for x in tag.groups())
    assert read_elf(SYSTEM_FILES[0]).glibc_version is None  # a program defines no GLIBC_ versions
