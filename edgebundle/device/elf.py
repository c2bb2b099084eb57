"""Which architecture a binary is for, read from its ELF header on the host, before anything runs:
a wrong-arch binary on ``local`` is a one-line error rather than "Exec format error" (or, with
binfmt_misc set up, a silently emulated run that would pass for native)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..target import Arch

# e_machine values (elf.h) of the architectures edgebundle targets.
MACHINES: dict[int, Arch] = {62: "x86_64", 183: "aarch64"}
OTHER_MACHINES = {3: "i386", 40: "32-bit ARM", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 243: "RISC-V"}
NOT_OURS = "is not an edgebundle binary"
BUILD_HINT = "build one with: edgebundle build MODEL.tflite --recipe RECIPE"


def elf_arch(path: Path) -> Arch:
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    if header[:4] != b"\x7fELF":
        raise ConfigError(f"{path} {NOT_OURS} (not an ELF executable); {BUILD_HINT}")
    if len(header) < 20 or header[5] not in (1, 2):
        raise ConfigError(f"{path} {NOT_OURS} (truncated ELF header); {BUILD_HINT}")
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    arch = MACHINES.get(machine) if header[4] == 2 else None
    if arch is None:
        bits = "64" if header[4] == 2 else "32"
        name = OTHER_MACHINES.get(machine, f"ELF machine {machine}")
        raise ConfigError(
            f"{path} is a {bits}-bit {name} program; edgebundle binaries are x86_64 or aarch64 ({BUILD_HINT})"
        )
    return arch
