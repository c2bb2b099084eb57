"""Device tests: run a built binary on a device and measure it (``edgebundle test``).

A device test is a straight pipeline: binary + device -> runs -> DeviceReport -> budget check
(measurement.py -> report.py -> budgets.py). Devices are reached through transports, one module each
(local.py, qemu.py, ssh.py) satisfying the small ``Transport`` protocol below: run one of the POSIX
shell scripts of scripts.py there, and say how the binary is started and measured there. What runs
ON the device is only those scripts and the binary itself (its hidden measuring mode,
edgebundle/runtime/measure.py), so a device needs nothing but /bin/sh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import ConfigError
from ..proc import TIMEOUT_S, Completed, Echo, LineHandler
from ..target import Arch
from .scripts import Script


@dataclass(frozen=True, kw_only=True)
class Launch:
    """How the binary is started on a device, and what measures its runs there.

    ``prefix`` goes before the binary (an explicit QEMU emulator); ``measurer`` is the argv of the
    startup measurer, or None for the binary's own hidden mode (``APP --eb-measure``).
    """

    prefix: tuple[str, ...] = ()
    measurer: tuple[str, ...] | None = None
    note: str | None = None


class Transport(Protocol):
    @property
    def device(self) -> str:
        """The device as the report names it: local, qemu, ssh://user@host:port."""
        ...

    @property
    def emulated(self) -> bool: ...

    def shell(
        self,
        script: Script,
        args: Sequence[str],
        *,
        stdin: Path | None = None,
        on_line: LineHandler | None = None,
        timeout: float = TIMEOUT_S["device step"],
        detach: bool = False,
    ) -> Completed:
        """Run ``sh -c SCRIPT sh ARGS...`` on the device; ARGS reach it as they are, never parsed."""
        ...

    def launch(self, binary: Path, binary_arch: Arch, machine: str) -> Launch:
        """How to run ``binary`` there, given ``uname -m`` of the device; DeviceError if it cannot."""
        ...


DEVICE_HELP = "local, qemu, or ssh://[user@]host[:port]"


def open_transport(device: str, echo: Echo | None) -> Transport:
    """``local``, ``qemu`` or ``ssh://[user@]host[:port]``; a ConfigError names the accepted forms."""
    from . import local, qemu, ssh

    if device == "local":
        return local.LocalTransport(echo=echo)
    if device == "qemu":
        return qemu.QemuTransport(echo=echo)
    if device.startswith("ssh://"):
        return ssh.SshTransport(url=ssh.parse_url(device), echo=echo)
    hint = " (an SSH device is written ssh://HOST)" if "://" not in device and device else ""
    raise ConfigError(f"--device {device!r}: expected {DEVICE_HELP}{hint}")
