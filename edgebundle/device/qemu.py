"""A foreign-arch binary on this host through QEMU user-mode emulation.

binfmt_misc first (the kernel then runs every process of that arch through QEMU, so a onefile
bootloader can start its own child), else an explicit ``qemu-ARCH[-static]`` in front of the binary
(enough for a single-process program). The runs are measured by the builder's own Python running the
same measuring module the binary carries, since the measurer need not be emulated too. Figures under
emulation include QEMU itself and are not representative of a device; the report says so.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeviceError
from ..target import Arch
from . import Launch
from .local import LocalTransport

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
MEASURER = (sys.executable, "-m", "edgebundle.runtime.measure")


@dataclass(frozen=True, kw_only=True)
class QemuTransport(LocalTransport):
    binfmt_dir: Path = BINFMT_DIR

    @property
    def device(self) -> str:
        return "qemu"

    @property
    def emulated(self) -> bool:
        return True

    def launch(self, binary: Path, binary_arch: Arch, machine: str) -> Launch:
        return qemu_launch(binary_arch, self.binfmt_dir, shutil.which)


def build_root_of(binary: Path, arch: Arch) -> Path | None:
    """The root filesystem of the cached build root that made ``binary`` (the target and backend of
    its manifest), when it is still in the cache: it holds the C library and zlib that QEMU needs
    (QEMU_LD_PREFIX), so that the user need not find it."""
    from ..backends.bundle import read_app_files
    from ..buildenv import debian_root
    from ..errors import EdgeBundleError
    from ..target import load_target

    try:
        # the payload's manifest only: inspect_binary would also hash the model and list the runner
        manifest = json.loads(read_app_files(binary)["manifest.json"])
        root = debian_root(load_target(str(manifest["target"]["name"])), str(manifest["backend"]))
    except (EdgeBundleError, OSError, KeyError, TypeError, ValueError):
        return None  # not ours, or its target is not one this edgebundle knows by name
    if root.target.arch != arch or not root.exists():
        return None
    return root.rootfs


def qemu_launch(arch: Arch, binfmt_dir: Path, which: Callable[[str], str | None]) -> Launch:
    """The choice between binfmt_misc and an explicit emulator (``which`` is shutil.which)."""
    entry = binfmt_dir / f"qemu-{arch}"
    try:
        registered = entry.read_text().splitlines()[:1] == ["enabled"]
    except OSError:
        registered = False
    if registered:
        return Launch(measurer=MEASURER, note=f"emulated by QEMU via binfmt_misc ({entry})")
    for name in (f"qemu-{arch}-static", f"qemu-{arch}"):
        found = which(name)
        if found:
            return Launch(
                prefix=(str(found),),
                measurer=MEASURER,
                note=f"emulated by {found} (no binfmt_misc entry: a binary that starts itself again fails)",
            )
    raise DeviceError(
        f"--device qemu: no QEMU user-mode emulator for {arch} on this host; install one "
        "(Debian/Ubuntu: apt-get install qemu-user-static) and register it with binfmt_misc"
    )
