"""Just enough ELF reading to audit what a binary needs from the device's OS, with no tools installed:
its architecture, and the highest GLIBC_x.y symbol version it (or a bundled library) requires.

The symbol versions live in the ``.gnu.version_r`` section (SHT_GNU_verneed): one Verneed entry per
needed library, each with Vernaux entries naming versions such as ``GLIBC_2.34``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

MACHINES = {62: "x86_64", 183: "aarch64", 3: "i386", 40: "arm", 243: "riscv64"}
SHT_GNU_VERNEED = 0x6FFFFFFE
# Versions that name an ABI feature instead of a release, with the glibc release that brought it: a
# file linked with ``-z pack-relative-relocs`` (DT_RELR) needs GLIBC_ABI_DT_RELR, i.e. glibc 2.36.
GLIBC_ABI_MARKERS = {"GLIBC_ABI_DT_RELR": (2, 36)}


class NotElfError(ValueError):
    """The file is not an ELF object (or is truncated)."""


@dataclass(frozen=True)
class ElfInfo:
    path: Path
    arch: str
    needed_versions: frozenset[str]  # e.g. {"GLIBC_2.17", "GLIBC_2.34", "GLIBCXX_3.4.29"}

    @property
    def glibc_floor(self) -> tuple[int, int] | None:
        found = [
            v
            for v in (
                max_version(self.needed_versions, "GLIBC_"),
                *(GLIBC_ABI_MARKERS.get(name) for name in self.needed_versions),
            )
            if v is not None
        ]
        return max(found, default=None)


def version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def max_version(versions: frozenset[str] | set[str], prefix: str) -> tuple[int, int] | None:
    found = [version_key(v[len(prefix) :]) for v in versions if v.startswith(prefix)]
    found = [f for f in found if len(f) >= 2]
    if not found:
        return None
    best = max(found)
    return best[0], best[1]


def read_elf(path: Path) -> ElfInfo:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NotElfError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_elf(data, path)


def parse_elf(data: bytes, path: Path = Path("<memory>")) -> ElfInfo:
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise NotElfError(f"{path}: not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    try:
        machine = struct.unpack_from(end + "H", data, 18)[0]
        if is64:
            (shoff,) = struct.unpack_from(end + "Q", data, 40)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 58)
        else:
            (shoff,) = struct.unpack_from(end + "I", data, 32)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 46)
        sections = []
        for i in range(shnum):
            base = shoff + i * shentsize
            if is64:
                _, sh_type, _, _, off, size, link, info = struct.unpack_from(end + "IIQQQQII", data, base)
            else:
                _, sh_type, _, _, off, size, link, info = struct.unpack_from(end + "IIIIIIII", data, base)
            sections.append((sh_type, off, size, link, info))
        versions: set[str] = set()
        for sh_type, off, _size, link, count in sections:
            if sh_type != SHT_GNU_VERNEED:
                continue
            strtab_off = sections[link][1]
            entry = off
            for _ in range(count):
                _ver, _cnt, _file, aux, nxt = struct.unpack_from(end + "HHIII", data, entry)
                a = entry + aux
                for _ in range(_cnt):
                    _hash, _flags, _other, name, anext = struct.unpack_from(end + "IHHII", data, a)
                    versions.add(_cstr(data, strtab_off + name))
                    if not anext:
                        break
                    a += anext
                if not nxt:
                    break
                entry += nxt
    except (struct.error, IndexError):
        raise NotElfError(f"{path}: truncated or malformed ELF file") from None
    return ElfInfo(
        path=path, arch=MACHINES.get(machine, f"machine-{machine}"), needed_versions=frozenset(versions)
    )


def _cstr(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return data[offset:end].decode("ascii", "replace")


@dataclass(frozen=True)
class GlibcAudit:
    """The highest GLIBC_x.y any audited file needs, and which file sets it."""

    floor: tuple[int, int] | None
    culprit: Path | None
    per_file: dict[Path, tuple[int, int] | None]

    @property
    def floor_text(self) -> str:
        return f"{self.floor[0]}.{self.floor[1]}" if self.floor else "none"


def audit_glibc(paths: list[Path]) -> GlibcAudit:
    """Audit ELF files; non-ELF files are skipped."""
    per_file: dict[Path, tuple[int, int] | None] = {}
    for path in sorted(paths):
        try:
            per_file[path] = read_elf(path).glibc_floor
        except NotElfError:
            continue
    needing = [(floor, path) for path, floor in per_file.items() if floor is not None]
    if not needing:
        return GlibcAudit(floor=None, culprit=None, per_file=per_file)
    floor, culprit = max(needing)
    return GlibcAudit(floor=floor, culprit=culprit, per_file=per_file)
