"""Just enough ELF reading to audit what a binary needs from the device's OS, with no tools installed:
its architecture, the highest GLIBC_x.y symbol version it (or a bundled library) requires, the
libraries it needs (DT_NEEDED), its loader (PT_INTERP) and, for a C library, the glibc version it
defines and the oldest kernel it supports (the GNU ABI tag note).

The symbol versions live in the ``.gnu.version_r`` section (SHT_GNU_verneed): one Verneed entry per
needed library, each with Vernaux entries naming versions such as ``GLIBC_2.34``. Defined versions
(a libc's ``GLIBC_2.36``) are in ``.gnu.version_d`` (SHT_GNU_verdef).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

MACHINES = {62: "x86_64", 183: "aarch64", 3: "i386", 40: "arm", 243: "riscv64"}
SHT_DYNAMIC = 6
SHT_NOTE = 7
SHT_GNU_VERDEF = 0x6FFFFFFD
SHT_GNU_VERNEED = 0x6FFFFFFE
PT_INTERP = 3
DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH = 1, 14, 15, 29
NT_GNU_ABI_TAG = 1
# Versions that name an ABI feature instead of a release, with the glibc release that brought it: a
# file linked with ``-z pack-relative-relocs`` (DT_RELR) needs GLIBC_ABI_DT_RELR, i.e. glibc 2.36.
GLIBC_ABI_MARKERS = {"GLIBC_ABI_DT_RELR": (2, 36)}


class NotElfError(ValueError):
    """The file is not an ELF object (or is truncated)."""


@dataclass(frozen=True)
class Interp:
    """The PT_INTERP segment: where in the file the loader's path is, and the path."""

    offset: int
    size: int
    path: bytes


@dataclass(frozen=True)
class ElfInfo:
    path: Path
    arch: str
    needed_versions: frozenset[str]  # e.g. {"GLIBC_2.17", "GLIBC_2.34", "GLIBCXX_3.4.29"}
    needed: tuple[str, ...] = ()  # DT_NEEDED, in order
    soname: str | None = None
    rpath: str | None = None  # DT_RPATH or, when there is one, DT_RUNPATH
    interp: Interp | None = None
    defined_versions: frozenset[str] = frozenset()  # a libc: {"GLIBC_2.2.5", ..., "GLIBC_2.36"}
    kernel_floor: tuple[int, int, int] | None = None  # the GNU ABI tag: the oldest Linux it runs on

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

    @property
    def glibc_version(self) -> tuple[int, int] | None:
        """The glibc release a C library is (the highest GLIBC_x.y it defines), else None."""
        return max_version(self.defined_versions, "GLIBC_")


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
    try:
        return _Parser(data, path).info()
    except (struct.error, IndexError, ValueError):
        raise NotElfError(f"{path}: truncated or malformed ELF file") from None


class _Parser:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path = data, path
        self.is64 = data[4] == 2
        self.end = "<" if data[5] == 1 else ">"
        self.word = "Q" if self.is64 else "I"
        (self.machine,) = self._unpack("H", 18)
        w = self.word
        if self.is64:
            phoff, shoff = self._unpack("QQ", 32)
            phentsize, phnum, shentsize, shnum = self._unpack("HHHH", 54)
        else:
            phoff, shoff = self._unpack("II", 28)
            phentsize, phnum, shentsize, shnum = self._unpack("HHHH", 42)
        # (type, offset, size, link, info, entsize) per section
        self.sections: list[tuple[int, int, int, int, int, int]] = []
        for i in range(shnum):
            base = shoff + i * shentsize
            fields = self._unpack(f"II{w}{w}{w}{w}II{w}{w}", base)
            _, sh_type, _, _, off, size, link, info, _, entsize = fields
            self.sections.append((sh_type, off, size, link, info, entsize))
        self.segments: list[tuple[int, int, int]] = []  # (type, offset, file size)
        for i in range(phnum):
            base = phoff + i * phentsize
            if self.is64:
                p_type, _, off, _, _, filesz = self._unpack("IIQQQQ", base)
            else:
                p_type, off, _, _, filesz = self._unpack("IIIII", base)
            self.segments.append((p_type, off, filesz))

    def _unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        return struct.unpack_from(self.end + fmt, self.data, offset)

    def info(self) -> ElfInfo:
        needed: list[str] = []
        values: dict[int, str] = {}
        for sh_type, off, size, link, _info, entsize in self.sections:
            if sh_type != SHT_DYNAMIC:
                continue
            strtab = self.sections[link][1]
            for pos in range(off, off + size, entsize or (16 if self.is64 else 8)):
                tag, val = self._unpack(self.word * 2, pos)
                if tag == 0:
                    break
                if tag == DT_NEEDED:
                    needed.append(_cstr(self.data, strtab + val))
                elif tag in (DT_SONAME, DT_RPATH, DT_RUNPATH):
                    values[tag] = _cstr(self.data, strtab + val)
        interp = None
        for p_type, off, filesz in self.segments:
            if p_type == PT_INTERP and filesz:
                interp = Interp(offset=off, size=filesz, path=self.data[off : off + filesz].split(b"\0")[0])
        return ElfInfo(
            path=self.path,
            arch=MACHINES.get(self.machine, f"machine-{self.machine}"),
            needed_versions=frozenset(self._verneed()),
            needed=tuple(needed),
            soname=values.get(DT_SONAME),
            rpath=values.get(DT_RUNPATH, values.get(DT_RPATH)),
            interp=interp,
            defined_versions=frozenset(self._verdef()),
            kernel_floor=self._abi_tag(),
        )

    def _verneed(self) -> set[str]:
        versions: set[str] = set()
        for sh_type, off, _size, link, count, _ in self.sections:
            if sh_type != SHT_GNU_VERNEED:
                continue
            strtab_off = self.sections[link][1]
            entry = off
            for _ in range(count):
                _ver, cnt, _file, aux, nxt = self._unpack("HHIII", entry)
                a = entry + aux
                for _ in range(cnt):
                    _hash, _flags, _other, name, anext = self._unpack("IHHII", a)
                    versions.add(_cstr(self.data, strtab_off + name))
                    if not anext:
                        break
                    a += anext
                if not nxt:
                    break
                entry += nxt
        return versions

    def _verdef(self) -> set[str]:
        versions: set[str] = set()
        for sh_type, off, _size, link, count, _ in self.sections:
            if sh_type != SHT_GNU_VERDEF:
                continue
            strtab_off = self.sections[link][1]
            entry = off
            for _ in range(count):
                _ver, flags, _ndx, cnt, _hash, aux, nxt = self._unpack("HHHHIII", entry)
                if cnt and not flags & 1:  # VER_FLG_BASE names the file itself (libc.so.6)
                    (name, _anext) = self._unpack("II", entry + aux)
                    versions.add(_cstr(self.data, strtab_off + name))
                if not nxt:
                    break
                entry += nxt
        return versions

    def _abi_tag(self) -> tuple[int, int, int] | None:
        for sh_type, off, size, *_ in self.sections:
            if sh_type != SHT_NOTE:
                continue
            pos = off
            while pos + 12 <= off + size:
                namesz, descsz, n_type = self._unpack("III", pos)
                name = self.data[pos + 12 : pos + 12 + namesz]
                desc = pos + 12 + (namesz + 3) // 4 * 4
                if n_type == NT_GNU_ABI_TAG and name == b"GNU\0" and descsz >= 16:
                    os_, major, minor, sub = self._unpack("IIII", desc)
                    if os_ == 0:  # ELF_NOTE_OS_LINUX
                        return major, minor, sub
                pos = desc + (descsz + 3) // 4 * 4
        return None


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
