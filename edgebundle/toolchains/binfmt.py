"""QEMU user-mode emulation through binfmt_misc: is it registered for an arch, and register it.

With a handler registered (Debian's qemu-user-static line carries the F flag, so the kernel keeps
the emulator open and it works inside a chroot without copying it there), every process of the
foreign arch runs through QEMU: a build root's Python, the compilers and ``ldd`` PyInstaller starts,
and a onefile binary that re-executes itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import ToolMissingError
from ..proc import TIMEOUT_S, Echo, run

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# QEMU user mode emulates its "max" CPU unless told otherwise: every extension it knows. Debian 12's
# QEMU 7.2 gets SME (the Scalable Matrix Extension) wrong, and LiteRT 2.1.6's XNNPACK takes its SME
# int8 kernels when the CPU has it: the digits int8 model answered garbage under QEMU (the same
# binary is exact with max,sme=off, cortex-a72, cortex-a76 or neoverse-n1). So every process
# edgebundle emulates gets max without SME, unless the caller set QEMU_CPU (real devices with SME
# are rare: Armv9.2 cores).
QEMU_CPU = "max,sme=off"
# Debian names the file qemu-ARCH.conf, Ubuntu qemu-ARCH-static.conf; both come with qemu-user-static.
CONF_DIRS = (Path("/usr/lib/binfmt.d"), Path("/etc/binfmt.d"))
INSTALL = "apt-get install qemu-user-static"


def qemu_cpu_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """QEMU_CPU for an emulated process: the caller's (``env``, default os.environ) or QEMU_CPU."""
    return {"QEMU_CPU": (os.environ if env is None else env).get("QEMU_CPU") or QEMU_CPU}


def registration_line(conf_text: str) -> str | None:
    """The first non-comment line of a binfmt.d file: what gets written into ``register``."""
    for raw in conf_text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            return line
    return None


def entry_name(line: str, arch: str) -> str:
    """``:NAME:type:offset:magic:mask:interpreter:flags`` -> NAME (the file under binfmt_misc)."""
    fields = line.split(line[0]) if line else []
    return fields[1] if len(fields) > 1 and fields[1] else f"qemu-{arch}"


def find_conf(arch: str, conf_dirs: tuple[Path, ...] = CONF_DIRS) -> Path | None:
    for directory in conf_dirs:
        for name in (f"qemu-{arch}.conf", f"qemu-{arch}-static.conf"):
            if (directory / name).is_file():
                return directory / name
    return None


def entry_state(arch: str, binfmt_dir: Path = BINFMT_DIR, conf: Path | None = None) -> str:
    """``enabled``, ``disabled`` or ``missing`` for the qemu handler of ``arch``."""
    names = [f"qemu-{arch}"]
    if conf is not None:
        line = registration_line(conf.read_text())
        if line:
            names.insert(0, entry_name(line, arch))
    for name in names:
        try:
            first = (binfmt_dir / name).read_text().splitlines()[:1]
        except OSError:
            continue
        return "enabled" if first == ["enabled"] else "disabled"
    return "missing"


def registered(arch: str, binfmt_dir: Path = BINFMT_DIR) -> bool:
    """True when the kernel runs ``arch`` binaries through QEMU here."""
    return entry_state(arch, binfmt_dir, find_conf(arch)) == "enabled"


def register_command(arch: str, conf: Path | None, binfmt_dir: Path = BINFMT_DIR) -> str:
    """The shell command a root user runs to register the handler (quoted in error messages)."""
    source = conf or Path(f"/usr/lib/binfmt.d/qemu-{arch}.conf")
    return (
        f"mountpoint -q {binfmt_dir} || mount -t binfmt_misc binfmt_misc {binfmt_dir}; "
        f"grep -v '^#' {source} | head -n 1 > {binfmt_dir}/register"
    )


def ensure_registered(
    arch: str,
    echo: Echo,
    *,
    binfmt_dir: Path = BINFMT_DIR,
    conf_dirs: tuple[Path, ...] = CONF_DIRS,
    euid: int | None = None,
) -> None:
    """Register (or re-enable) qemu-ARCH with binfmt_misc when missing; as root only, otherwise say
    exactly what to run."""
    conf = find_conf(arch, conf_dirs)
    state = entry_state(arch, binfmt_dir, conf)
    if state == "enabled":
        return
    if conf is None:
        raise ToolMissingError(
            f"no QEMU user-mode emulator for {arch} (no qemu-{arch}.conf in "
            f"{' or '.join(map(str, conf_dirs))}); {INSTALL}"
        )
    line = registration_line(conf.read_text())
    if line is None:
        raise ToolMissingError(f"{conf}: no binfmt registration line in it; reinstall qemu-user-static")
    uid = os.geteuid() if euid is None else euid
    if uid != 0:
        raise ToolMissingError(
            f"QEMU for {arch} is not registered with binfmt_misc and registering it needs root; run: "
            f'sudo sh -c "{register_command(arch, conf, binfmt_dir)}"'
        )
    if state == "disabled":
        entry = binfmt_dir / entry_name(line, arch)
        echo(f"+ echo 1 > {entry}")
        entry.write_text("1")
    else:
        if not (binfmt_dir / "register").exists():
            run(
                ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)],
                echo=echo,
                what="mounting binfmt_misc",
                timeout=TIMEOUT_S["quick"],
                error=ToolMissingError,
            )
        echo(f"+ grep -v '^#' {conf} | head -n 1 > {binfmt_dir / 'register'}")
        try:
            (binfmt_dir / "register").write_text(line + "\n")
        except OSError as exc:
            raise ToolMissingError(
                f"registering qemu-{arch} with binfmt_misc failed ({exc.strerror}); in a container, "
                f'run on the host: sudo sh -c "{register_command(arch, conf, binfmt_dir)}"'
            ) from None
    if entry_state(arch, binfmt_dir, conf) != "enabled":
        raise ToolMissingError(
            f"qemu-{arch} is still not enabled in {binfmt_dir}; run: "
            f'sudo sh -c "{register_command(arch, conf, binfmt_dir)}"'
        )
