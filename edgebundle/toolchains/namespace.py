"""Running a command inside a root filesystem, the way every command of a build root runs: in a
private mount namespace (``unshare --mount --propagation private``) where proc, sys, dev and a tmpfs
/tmp are mounted into the root and the command's working directory is bind-mounted at the same
absolute path, then ``chroot``: a backend's argv (absolute paths into the build directory) works
unchanged, and nothing stays mounted once the command exits.

Hand-written on purpose: util-linux's unshare, mount and chroot are what the job needs (a library such
as python-unshare would add a compiled dependency for one syscall, and bubblewrap or proot would be
one more host tool to install); the mount script is the whole of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Runs on the host side, inside the new mount namespace, before chroot. Arguments:
#   ROOTFS EMULATED(0|1) USERNS(0|1) [MODE:PATH ...] -- COMMAND...
# MODE:PATH binds the host's directory PATH at the same path inside the root, read-write (rw) or
# read-only (ro).
# The tmpfs over /sys/devices/system/cpu works around ai-edge-litert 2.2/2.3 crashing under
# Debian's qemu 7.2 after reading the host's CPU cache topology there (we pin 2.1.6, which does
# not, but a user's --interpreter pin may). It holds the host's CPU lists and nothing else (CPU_LISTS):
# XNNPACK's cpuinfo needs "possible" or "present", and LiteRT's C API refuses to compile a model for
# the CPU without it (the litert interpreter's model check, arm64-lean); the per-CPU directories,
# caches included, stay absent. In a user namespace (an unprivileged user running an
# existing root) proc and sysfs cannot be mounted afresh without new PID and network namespaces, so
# the host's are bound; no PID namespace also means the command's own exit status or signal (a
# crash of the interpreter on a bad model) reaches the caller unchanged.
CPU_LISTS: Final = """\
for list in possible present online; do
    cat "/sys/devices/system/cpu/$list" >"$root/sys/devices/system/cpu/$list" || :
done
"""
MOUNT_SCRIPT: Final = (
    """\
set -eu
root=$1 emulated=$2 userns=$3
shift 3
if [ "$userns" = 1 ]; then
    mount --rbind /proc "$root/proc"
    mount --rbind /sys "$root/sys"
else
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
fi
if [ "$emulated" = 1 ]; then
    mount -t tmpfs -o size=64k,mode=755 nocpuinfo "$root/sys/devices/system/cpu"
"""
    + CPU_LISTS
    + """\
fi
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmp "$root/tmp"
while [ "$1" != -- ]; do
    mode=${1%%:*} path=${1#*:}
    mkdir -p "$root$path"
    mount --bind "$path" "$root$path"
    if [ "$mode" = ro ]; then mount -o remount,bind,ro "$root$path"; fi
    shift
done
shift
exec "$@"
"""
)


# A private mount namespace: what is mounted in it is gone when its last process exits.
PRIVATE_MOUNTS: Final = ("unshare", "--mount", "--propagation", "private", "--fork")


@dataclass(frozen=True, kw_only=True)
class Bind:
    """A host path made visible at the same absolute path inside the root."""

    path: str
    read_only: bool = False

    def arg(self) -> str:
        return f"{'ro' if self.read_only else 'rw'}:{self.path}"


def namespace_argv(
    *,
    rootfs: Path,
    argv: list[str],
    cwd: str | None,
    env: Mapping[str, str],
    binds: Iterable[Bind] = (),
    emulated: bool,
    privileged: bool,
) -> list[str]:
    """The host command that runs ``argv`` inside ``rootfs``: unshare, mount, chroot, ``env -i``."""
    unshare = [*PRIVATE_MOUNTS, "--kill-child"]  # an interrupted build leaves no emulated processes
    if not privileged:
        unshare[1:1] = ["--user", "--map-root-user"]
    inside = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in sorted(env.items()))]
    if cwd is not None:
        inside.insert(2, f"--chdir={cwd}")
    return [
        *unshare,
        "--",
        "/bin/sh",
        "-c",
        MOUNT_SCRIPT,
        "edgebundle-root",
        str(rootfs),
        "1" if emulated else "0",
        "0" if privileged else "1",
        *(b.arg() for b in binds),
        "--",
        "chroot",
        str(rootfs),
        *inside,
        *argv,
    ]


def remove_mount_point(rootfs: Path, path: str) -> None:
    """Remove the empty directories the mount script made for a bind, up to the first one that
    existed before (or holds anything)."""
    current = rootfs / path.lstrip("/")
    while current != rootfs:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent
