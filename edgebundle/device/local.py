"""The machine edgebundle runs on, as a device: the same scripts and the same in-binary measuring
mode as on a remote device, run by the local /bin/sh in a private temp dir."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeviceError
from ..proc import TIMEOUT_S, Completed, Echo, LineHandler, stream
from ..target import Arch, normalize_arch
from . import Launch
from .scripts import Script


@dataclass(frozen=True, kw_only=True)
class LocalTransport:
    echo: Echo | None
    # The shell that plays the device's. Tests pass ("busybox", "sh") and a PATH of busybox applets
    # to prove that a device needs nothing more.
    shell_argv: tuple[str, ...] = ("/bin/sh",)
    env: Mapping[str, str] | None = None

    @property
    def device(self) -> str:
        return "local"

    @property
    def emulated(self) -> bool:
        return False

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
        return stream(
            [*self.shell_argv, "-c", script.text, "sh", *args],
            shown=f"{shlex.join(self.shell_argv)} -c <{script.name}> sh {shlex.join(args)}".rstrip(),
            echo=self.echo,
            stdin=stdin,
            on_line=on_line,
            timeout=timeout,
            env=self.env,
            detach=detach,
            error=DeviceError,
        )

    def launch(self, binary: Path, binary_arch: Arch, machine: str) -> Launch:
        return native_launch(binary, binary_arch, machine, "this host", "--device qemu")


def native_launch(binary: Path, binary_arch: Arch, machine: str, where: str, alternative: str) -> Launch:
    """A device that runs the binary natively: its arch must be the binary's."""
    if normalize_arch(machine) != binary_arch:
        raise DeviceError(
            f"{binary} is an {binary_arch} binary but {where} is {machine}; "
            f"test it with {alternative} or on an {binary_arch} device (--device ssh://HOST)"
        )
    return Launch()
