"""What a binary needs of a device's kernel and C library, checked before it is copied there (by
``edgebundle test`` and ``edgebundle deploy``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..elf import version_key
from ..errors import ConfigError, DeviceError


def binary_libc(binary: Path) -> dict[str, Any] | None:
    """The binary's ``libc`` as inspect reports it (bundled glibc and its kernel floor, or the glibc
    floor it needs of the device); None when the file is not one the builder can read (the device's
    --info step then says what it is)."""
    from ..inspection import inspect_binary

    try:
        libc: dict[str, Any] = inspect_binary(binary)["libc"]
    except ConfigError:
        return None
    return libc


def check_libc(libc: dict[str, Any], name: str, device: str, kernel: str, glibc: str) -> str:
    """What binary ``name`` (its ``binary_libc``) needs of the device's kernel and C library, checked
    before it is copied: DeviceError when the device cannot run it, else a note for the report."""
    if libc["mode"] == "bundled":
        floor = libc["kernel_floor"]
        release = re.match(r"\d+(?:\.\d+)*", kernel)  # "6.1.0-13-amd64" -> 6.1.0
        if release and version_key(release.group()) < version_key(floor):
            raise DeviceError(
                f"{device} runs Linux {kernel} but {name}'s bundled glibc {libc['glibc']} needs "
                f"Linux >= {floor}"
            )
        return f"C library: bundled glibc {libc['glibc']} (device: Linux {kernel or '?'})"
    floor = libc["glibc_floor"]
    if floor and glibc and version_key(glibc) < version_key(floor):
        raise DeviceError(
            f"{device} has glibc {glibc} but {name} was built with --system-libc and needs glibc >= "
            f"{floor}; rebuild it without --system-libc (it then carries its own)"
        )
    return f"C library: the device's glibc {glibc or '(none found)'}, needs >= {floor}"
