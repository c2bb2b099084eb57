#!/usr/bin/env python3
"""Test beds: root filesystems that are not the build machine, to run a built binary in as on a device.

    python3 scripts/testbeds.py root bullseye --arch amd64   # Debian 11 minbase (glibc 2.31): its path
    python3 scripts/testbeds.py bare --arch arm64            # a static busybox and nothing else: its path
    python3 scripts/testbeds.py run ROOT [--bind HOST:INSIDE[:ro]]... [--env K=V]... [--cwd DIR] -- CMD...
    python3 scripts/testbeds.py clean

- ``bullseye``: ``mmdebstrap --variant=minbase --include=busybox-static bullseye`` from the host's own
  Debian mirror (its apt sources, read by edgebundle/toolchains/aptsources.py; deb.debian.org on a
  host that has none), plus the /etc/hosts of an installed system. arm64 runs under QEMU through
  binfmt_misc (``bash scripts/ci-services.sh``).
- ``bare``: ``/bin/busybox`` (the bullseye root's busybox-static: no dynamic loader), ``/bin/sh`` a
  link to it, empty ``/proc``, ``/dev`` and ``/tmp``; no C library, no ``ld.so``, no ``/etc``.
- ``run``: CMD inside ROOT, in a private mount namespace (``unshare --mount``): the root seen through
  an overlay whose changes live in a tmpfs (a run never changes the cached root), ``/proc`` and
  ``/sys`` (read-only) mounted as on any device, a minimal ``/dev`` (null, zero, full, random,
  urandom bound from the host), a fresh tmpfs ``/tmp``, the ``--bind`` directories or files, then
  ``chroot``. No ``--fork``: CMD ends up as the very process started, so its exit status and the
  signals sent to it are CMD's own. The network is the host's (a server listening inside is
  reachable on the host's 127.0.0.1). CMD's environment is ``--env`` only (with a default PATH, and
  HOME=/tmp unless given).

Everything is cached under ``${XDG_CACHE_HOME:-$HOME/.cache}/edgebundle-testbeds/``: a bed is made in
a temporary directory and renamed into place once it works (``NAME/rootfs`` and ``NAME/testbed.json``);
a lock file per bed makes a second process wait for the first and reuse its bed. Making a root and
``run`` need root (mmdebstrap --mode=root, mounts). Standard library only; the tests import it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final, Literal

LAYOUT: Final = "1"  # bump when the way beds are made changes: cached beds are then made again
SUITE: Final = "bullseye"
ARCHES: Final = ("amd64", "arm64")
KINDS: Final = ("bullseye", "bare")
Kind = Literal["bullseye", "bare", "gateway"]
QEMU_ARCH: Final = {"amd64": "x86_64", "arm64": "aarch64"}  # the binfmt_misc handler of a foreign bed
MACHINE_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64"}
MMDEBSTRAP_TIMEOUT_S: Final = 1800.0
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What an arm64 bed's or gateway's QEMU emulates: its "max" CPU without SME, which Debian 12's QEMU
# gets wrong for LiteRT's int8 kernels (edgebundle/toolchains/binfmt.py says more).
QEMU_CPU: Final = os.environ.get("QEMU_CPU") or "max,sme=off"
QEMU_ENV: Final = f"QEMU_CPU={QEMU_CPU}"
REPO: Final = Path(__file__).resolve().parent.parent
APTSOURCES: Final = REPO / "edgebundle" / "toolchains" / "aptsources.py"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
KEYRING: Final = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Host device nodes bound into a bed's /dev (a device's devtmpfs has these and more).
DEVICES: Final = ("null", "zero", "full", "random", "urandom")
PT_INTERP: Final = 3
# mmdebstrap writes no /etc/hosts; a Debian system installed on a device has these lines.
ETC_HOSTS: Final = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


class BedError(Exception):
    """A bed cannot be made or used: one line for the user."""


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "/root")) / ".cache")
    return Path(base) / "edgebundle-testbeds"


def say(text: str) -> None:
    print(f"testbeds: {text}", file=sys.stderr, flush=True)


def host_arch() -> str:
    machine = os.uname().machine
    return MACHINE_ARCH.get(machine, machine)


# --- apt sources: the host's mirror, for bullseye ------------------------------------------------


def _load_aptsources() -> ModuleType | None:
    """edgebundle's own parser of the host's apt sources, loaded from the checkout by file (it imports
    only the standard library): no need for edgebundle to be installed."""
    if not APTSOURCES.is_file():
        return None
    spec = importlib.util.spec_from_file_location("edgebundle_testbeds_aptsources", APTSOURCES)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def host_codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    """The host's Debian codename (``bookworm``), or None on a host that is not Debian."""
    try:
        text = os_release.read_text()
    except OSError:
        return None
    fields = dict(
        (key, value.strip().strip('"'))
        for key, _, value in (line.partition("=") for line in text.splitlines())
        if key
    )
    if fields.get("ID") != "debian":
        return None
    return fields.get("VERSION_CODENAME") or None


def main_suite_sources(sources: str, codename: str, suite: str) -> str | None:
    """Deb822 sources of the host's ``codename`` (from aptsources.select_sources) turned into the same
    mirror for ``suite`` alone: the release as published, without -updates and -security (a partial
    mirror may lack some of their files, and the release's glibc is the floor a bed is for). None
    when no stanza has ``codename`` itself."""
    stanzas = []
    for stanza in sources.split("\n\n"):
        lines = stanza.strip().splitlines()
        suites_line = next((i for i, line in enumerate(lines) if line.startswith("Suites:")), None)
        if suites_line is None or codename not in lines[suites_line].split()[1:]:
            continue
        lines[suites_line] = f"Suites: {suite}"
        stanzas.append("\n".join(lines) + "\n")
    return "\n".join(stanzas) if stanzas else None


def bullseye_sources() -> str:
    """Deb822 apt sources for bullseye from the host's own Debian mirror (or snapshot, or proxy);
    Debian's own mirror on a host whose sources name none (an Ubuntu machine, say)."""
    aptsources = _load_aptsources()
    codename = host_codename()
    if aptsources is not None and codename is not None:
        host = aptsources.select_sources(aptsources.host_sources(), codename)
        found = main_suite_sources(host, codename, SUITE) if host else None
        if found:
            return found
    return f"Types: deb\nURIs: {DEFAULT_MIRROR}\nSuites: {SUITE}\nComponents: main\nSigned-By: {KEYRING}\n"


# --- the cache: locks, atomic creation, removal -----------------------------------------------------


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = _unescape_mountinfo(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """rm -rf, refusing a tree with anything mounted in it (a host /dev bound there, say)."""
    if not path.exists() and not path.is_symlink():
        return
    mounted = mounts_under(path)
    if mounted:
        raise BedError(f"{path}: not removed, mounted in it: {' '.join(mounted)}")
    shutil.rmtree(path)


@dataclass(frozen=True)
class Bed:
    kind: Kind
    arch: str
    cache: Path

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.arch}"

    @property
    def path(self) -> Path:
        return self.cache / self.name

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def info_path(self) -> Path:
        return self.path / "testbed.json"

    @property
    def log(self) -> Path:
        return self.cache / f"{self.name}.log"

    def info(self) -> dict[str, object] | None:
        """What testbed.json says, or None when the bed is not made (or made by another layout)."""
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or info.get("layout") != LAYOUT or not self.rootfs.is_dir():
            return None
        return info


def _bed(kind: Kind, arch: str, cache: Path | None) -> Bed:
    if arch not in ARCHES:
        raise BedError(f"unknown arch {arch!r}: one of {', '.join(ARCHES)}")
    return Bed(kind=kind, arch=arch, cache=cache or cache_root())


def create(bed: Bed, make: Callable[[Path], dict[str, object]]) -> Path:
    """Make ``bed`` once: under its lock, in a temporary directory renamed into place."""
    if bed.info() is not None:
        return bed.rootfs
    with locked(bed.cache / f".{bed.name}.lock"):
        if bed.info() is not None:  # made by another process while this one waited
            return bed.rootfs
        for stale in bed.cache.glob(f".{bed.name}.tmp-*"):
            remove_tree(stale)  # left by a process killed while making it (we hold the lock)
        tmp = bed.cache / f".{bed.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        started = time.monotonic()
        try:
            info = make(tmp)
            seconds = round(time.monotonic() - started, 1)
            info = {"layout": LAYOUT, "kind": bed.kind, "arch": bed.arch, **info, "seconds": seconds}
            (tmp / "testbed.json").write_text(json.dumps(info, indent=1) + "\n")
            if bed.path.exists():  # made by another layout
                old = bed.cache / f".{bed.name}.tmp-old-{os.getpid()}"
                bed.path.rename(old)
                remove_tree(old)
            tmp.rename(bed.path)
        except BaseException:
            remove_tree(tmp)
            raise
        say(f"{bed.name} made in {seconds:.0f} s: {bed.rootfs}")
        return bed.rootfs


# --- making the beds ------------------------------------------------------------------------------


def binfmt_enabled(arch: str, binfmt: Path = Path("/proc/sys/fs/binfmt_misc")) -> bool:
    try:
        return (binfmt / f"qemu-{QEMU_ARCH[arch]}").read_text().splitlines()[:1] == ["enabled"]
    except OSError:
        return False


def _check_can_make(arch: str) -> None:
    if os.geteuid() != 0:
        raise BedError("making a test bed needs root (mmdebstrap --mode=root)")
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise BedError(f"{tool}: not found (apt-get install mmdebstrap)")
    if arch != host_arch():
        if shutil.which("arch-test") is None:
            raise BedError(
                "arch-test: not found; mmdebstrap needs it for a foreign root (apt-get install arch-test)"
            )
        if not binfmt_enabled(arch):
            raise BedError(
                f"qemu-{QEMU_ARCH[arch]} is not registered with binfmt_misc: "
                "run bash scripts/ci-services.sh as root"
            )


def mmdebstrap_argv(arch: str, rootfs: Path, sources: Path) -> list[str]:
    """In a private mount namespace of its own (no --fork: mmdebstrap is the process itself), so that
    whatever it mounts inside the root while installing goes away with it, even when it is killed."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--format=directory",
        f"--arch={arch}",
        "--include=busybox-static",
        "--aptopt=Acquire::Retries 3",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        SUITE,
        str(rootfs),
        str(sources),
    ]


def glibc_version(rootfs: Path) -> str | None:
    """The root's glibc version, from its ``libc-X.Y.so`` (bullseye names the library so)."""
    for lib in sorted(rootfs.glob("lib/*/libc-*.so")) + sorted(rootfs.glob("usr/lib/*/libc-*.so")):
        match = re.fullmatch(r"libc-(\d+\.\d+)\.so", lib.name)
        if match:
            return match.group(1)
    return None


def _smoke(rootfs: Path, what: str) -> None:
    """The new bed runs a command (through QEMU for a foreign arch), before it is renamed into place."""
    proc = subprocess.run(
        run_argv(rootfs, ["/bin/busybox", "echo", "ok"]),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        raise BedError(
            f"{what}: /bin/busybox does not run in it (exit {proc.returncode}): {proc.stderr.strip()}"
        )


def _mmdebstrap(bed: Bed, tmp: Path, sources_text: str, argv: Callable[[Path], list[str]]) -> None:
    """Run mmdebstrap for ``bed`` in ``tmp`` (``argv`` of the apt sources file it is given), its output
    into the bed's log; a BedError with the log's tail when it fails."""
    sources = tmp / "apt.sources"  # mmdebstrap reads a .sources file as deb822
    sources.write_text(sources_text)
    say(f"making {bed.name} with mmdebstrap (a few minutes under QEMU; log {bed.log})")
    with open(bed.log, "w") as log:
        try:
            proc = subprocess.run(
                argv(sources),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=MMDEBSTRAP_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BedError(f"mmdebstrap took over {MMDEBSTRAP_TIMEOUT_S:.0f} s; see {bed.log}") from None
    if proc.returncode != 0:
        tail = bed.log.read_text(errors="replace").strip().splitlines()[-5:]
        raise BedError(f"mmdebstrap failed (exit {proc.returncode}); see {bed.log}: " + " | ".join(tail))
    sources.unlink()


def ensure_bullseye(arch: str, cache: Path | None = None) -> Path:
    """The rootfs of the Debian bullseye minbase bed for ``arch``, made on first use."""
    bed = _bed("bullseye", arch, cache)

    def make(tmp: Path) -> dict[str, object]:
        _check_can_make(arch)
        rootfs = tmp / "rootfs"
        _mmdebstrap(bed, tmp, bullseye_sources(), lambda sources: mmdebstrap_argv(arch, rootfs, sources))
        (rootfs / "etc" / "hosts").write_text(ETC_HOSTS)  # as Debian's installer writes it
        if not is_static_elf(rootfs / "bin" / "busybox"):
            raise BedError(f"{rootfs}/bin/busybox is not a static executable")
        _smoke(rootfs, bed.name)
        return {"suite": SUITE, "glibc": glibc_version(rootfs)}

    return create(bed, make)


def ensure_bare(arch: str, cache: Path | None = None) -> Path:
    """The rootfs of the bare bed for ``arch`` (a static busybox only), made on first use."""
    bed = _bed("bare", arch, cache)

    def make(tmp: Path) -> dict[str, object]:
        source = ensure_bullseye(arch, cache)
        rootfs = tmp / "rootfs"
        for directory in ("bin", "proc", "dev", "tmp"):
            (rootfs / directory).mkdir(parents=True)
        (rootfs / "tmp").chmod(0o1777)
        busybox = rootfs / "bin" / "busybox"
        shutil.copyfile(source / "bin" / "busybox", busybox)
        busybox.chmod(0o755)
        if not is_static_elf(busybox):
            raise BedError(f"{source}/bin/busybox is not a static executable")
        (rootfs / "bin" / "sh").symlink_to("busybox")
        _smoke(rootfs, bed.name)
        return {"from": str(source)}

    return create(bed, make)


def ensure(kind: Kind, arch: str, cache: Path | None = None) -> Path:
    return ensure_bullseye(arch, cache) if kind == "bullseye" else ensure_bare(arch, cache)


def is_static_elf(path: Path) -> bool:
    """A 64-bit little-endian ELF executable without a PT_INTERP program header: the kernel runs it
    without any dynamic loader."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BedError(f"{path}: not a 64-bit little-endian ELF file")
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    types = (
        int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        for i in range(phnum)
    )
    return PT_INTERP not in types


def clean(cache: Path | None = None) -> None:
    """Remove every bed (waiting for a bed being made)."""
    cache = cache or cache_root()
    if not cache.is_dir():
        return
    for gateway in gateway_list(cache):
        gateway_down(str(gateway["name"]), cache)
    for lock in sorted(cache.glob(".*.lock")):
        with locked(lock):
            name = lock.name[1 : -len(".lock")]
            remove_tree(cache / name)
            for partial in cache.glob(f".{name}.tmp-*"):
                remove_tree(partial)
    remove_tree(cache)


# --- running a command in a bed -------------------------------------------------------------------

# Host side, inside the new mount namespace, before chroot. Arguments:
#   ROOTFS SCRATCH CWD [MODE HOST INSIDE ...] -- ENV... -- COMMAND...
# SCRATCH is an empty directory of the cache: a tmpfs is mounted on it (in this namespace only) for
# the overlay's upper layer and the merged view.
RUN_SCRIPT: Final = """\
set -eu
lower=$1 scratch=$2 cwd=$3
shift 3
mount -t tmpfs -o mode=755 testbed "$scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
mount -t overlay -o "lowerdir=$lower,upperdir=$scratch/upper,workdir=$scratch/work" testbed "$scratch/root"
root=$scratch/root
mkdir -p "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=755,size=1m testbed-dev "$root/dev"
for dev in DEVICES; do
    : >"$root/dev/$dev"
    mount --bind "/dev/$dev" "$root/dev/$dev"
done
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mkdir "$root/dev/shm"
mount -t tmpfs -o mode=1777 testbed-shm "$root/dev/shm"
mount -t tmpfs -o mode=1777 testbed-tmp "$root/tmp"
while [ "$1" != -- ]; do
    mode=$1 host=$2 inside=$3
    shift 3
    if [ -d "$host" ]; then
        mkdir -p "$root$inside"
    else
        mkdir -p "$(dirname "$root$inside")"
        [ -e "$root$inside" ] || : >"$root$inside"
    fi
    mount --bind "$host" "$root$inside"
    if [ "$mode" = ro ]; then mount -o remount,bind,ro "$root$inside"; fi
done
shift
mkdir -p "$root$cwd"
exec ENV -i "$@"
""".replace("DEVICES", " ".join(DEVICES))


@dataclass(frozen=True)
class Bind:
    """A host file or directory seen at ``inside`` in the bed."""

    host: str
    inside: str
    read_only: bool = False

    @classmethod
    def parse(cls, spec: str) -> Bind:
        """``HOST:INSIDE`` or ``HOST:INSIDE:ro`` (``HOST`` alone: the same path inside)."""
        parts = spec.split(":")
        read_only = False
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            read_only = parts.pop() == "ro"
        if len(parts) == 1:
            parts.append(parts[0])
        if len(parts) != 2 or not parts[0] or not parts[1].startswith("/"):
            raise BedError(f"--bind {spec}: expected HOST:/INSIDE[:ro]")
        return cls(host=str(Path(parts[0]).resolve()), inside=parts[1], read_only=read_only)


def run_argv(
    rootfs: Path,
    argv: Sequence[str],
    *,
    binds: Sequence[Bind] = (),
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
    cache: Path | None = None,
) -> list[str]:
    """The host command (to run as root) that runs ``argv`` inside ``rootfs``: unshare, mount,
    ``env -i``, chroot. ``argv`` is the process itself: exit status and signals are its own. Its
    environment is ``env`` (PATH defaults to the usual one, HOME to /tmp)."""
    scratch = (cache or cache_root()) / ".mnt"
    scratch.mkdir(parents=True, exist_ok=True)
    inside_env = {"PATH": DEFAULT_PATH, "HOME": "/tmp", "QEMU_CPU": QEMU_CPU, **(env or {})}
    tools = {}
    for tool in ("unshare", "env", "chroot"):
        found = shutil.which(tool)
        if found is None:
            raise BedError(f"{tool}: not found")
        tools[tool] = found
    bind_args = [a for b in binds for a in ("ro" if b.read_only else "rw", b.host, b.inside)]
    return [
        tools["unshare"],
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        RUN_SCRIPT.replace("ENV", tools["env"]),
        "testbed-run",
        str(rootfs.resolve()),
        str(scratch),
        cwd,
        *bind_args,
        "--",
        *(f"{k}={v}" for k, v in sorted(inside_env.items())),
        tools["unshare"],  # no namespace: only --root (chroot) and --wd, so CMD needs no shell inside
        f"--root={scratch}/root",
        f"--wd={cwd}",
        "--",
        *argv,
    ]


# --- gateways: Debian bookworm booted with systemd, reached over SSH --------------------------------

GATEWAY_SUITE: Final = "bookworm"
# What a gateway has beyond minbase: systemd as PID 1 and an sshd; never Python or curl (a deploy
# must need neither on the device).
GATEWAY_PACKAGES: Final = ("systemd", "systemd-sysv", "openssh-server", "dbus", "procps")
GATEWAY_ABSENT: Final = ("usr/bin/python3", "usr/bin/curl", "usr/bin/wget")
# Units a gateway does not need at boot (timers that run apt or fsck jobs in the middle of a test).
GATEWAY_MASKED: Final = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-tmpfiles-clean.timer",
)
GATEWAY_SSHD: Final = """\
# testbeds.py: root logins with a key only, on loopback only (the gateway shares the host's network).
ListenAddress 127.0.0.1
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
"""
GATEWAY_NAME_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,30}")
# Booting to "running": ~2 s natively, ~10-20 s of aarch64 systemd under QEMU on a busy host.
GATEWAY_BOOT_TIMEOUT_S: Final = 300.0
GATEWAY_STOP_TIMEOUT_S: Final = 30.0
NSPAWN_RUNTIME: Final = Path("/run/systemd/nspawn")
CI_KEY: Final = Path(os.environ.get("EDGEBUNDLE_CI_DIR", "/tmp/edgebundle-ci")) / "id_ed25519"


def bullseye_sources_default() -> str:
    return f"Types: deb\nURIs: {DEFAULT_MIRROR}\nSuites: {SUITE}\nComponents: main\nSigned-By: {KEYRING}\n"


def gateway_sources() -> str:
    """bullseye_sources() for bookworm: the host's own Debian mirror, the release as published."""
    aptsources = _load_aptsources()
    codename = host_codename()
    if aptsources is not None and codename is not None:
        host = aptsources.select_sources(aptsources.host_sources(), codename)
        found = main_suite_sources(host, codename, GATEWAY_SUITE) if host else None
        if found:
            return found
    return bullseye_sources_default().replace(f"Suites: {SUITE}\n", f"Suites: {GATEWAY_SUITE}\n")


def gateway_mmdebstrap_argv(arch: str, rootfs: Path, sources: Path) -> list[str]:
    argv = mmdebstrap_argv(arch, rootfs, sources)
    argv[argv.index("--include=busybox-static")] = "--include=" + ",".join(GATEWAY_PACKAGES)
    argv[argv.index(SUITE)] = GATEWAY_SUITE
    return argv


def ensure_gateway(arch: str, cache: Path | None = None) -> Path:
    """The rootfs of the gateway bed for ``arch`` (bookworm minbase, systemd, sshd), made on first use.
    Its SSH host keys are removed: each gateway brought up gets its own."""
    bed = _bed("gateway", arch, cache)

    def make(tmp: Path) -> dict[str, object]:
        _check_can_make(arch)
        rootfs = tmp / "rootfs"
        _mmdebstrap(
            bed, tmp, gateway_sources(), lambda sources: gateway_mmdebstrap_argv(arch, rootfs, sources)
        )
        present = [p for p in GATEWAY_ABSENT if (rootfs / p).exists()]
        if present:
            raise BedError(f"{bed.name}: has {', '.join(present)}; a gateway must have none")
        (rootfs / "etc" / "hosts").write_text(ETC_HOSTS)
        for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
            key.unlink()
        (rootfs / "etc" / "ssh" / "sshd_config.d" / "testbed.conf").write_text(GATEWAY_SSHD)
        for unit in GATEWAY_MASKED:
            link = rootfs / "etc" / "systemd" / "system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        smoke = subprocess.run(
            run_argv(rootfs, ["/bin/sh", "-c", "echo ok"], cache=cache),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        if smoke.returncode != 0 or smoke.stdout.strip() != "ok":
            raise BedError(f"{bed.name}: /bin/sh does not run in it: {smoke.stderr.strip()}")
        return {"suite": GATEWAY_SUITE, "packages": list(GATEWAY_PACKAGES)}

    return create(bed, make)


@dataclass(frozen=True)
class Gateway:
    """A gateway brought up from the cached bed: its state lives in ``cache/.gateways/NAME/`` (the
    overlay's upper layer, the console log, gateway.json); its SSH client settings are shared by all
    gateways (``cache/.gateways/ssh_config``, known_hosts per port)."""

    name: str
    cache: Path

    @property
    def base(self) -> Path:
        return self.cache / ".gateways"

    @property
    def path(self) -> Path:
        return self.base / self.name

    @property
    def info_path(self) -> Path:
        return self.path / "gateway.json"

    @property
    def console(self) -> Path:
        return self.path / "console.log"

    @property
    def ssh_config(self) -> Path:
        return self.base / "ssh_config"

    def known_hosts(self, port: int) -> Path:
        return self.base / f"known_hosts.{port}"

    def info(self) -> dict[str, object] | None:
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None


def _gateway(name: str, cache: Path | None) -> Gateway:
    if not GATEWAY_NAME_RE.fullmatch(name):
        raise BedError(f"gateway name {name!r}: expected lower-case letters, digits and '-'")
    return Gateway(name=name, cache=cache or cache_root())


def nspawn_pid(info: Mapping[str, object], name: str) -> int | None:
    """The pid of the gateway's systemd-nspawn when it is still running (and still that process)."""
    pid = info.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if b"systemd-nspawn" in argv[0] and name.encode() in argv else None


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ssh_argv(gw: Gateway, port: int, *command: str) -> list[str]:
    return ["ssh", "-F", str(gw.ssh_config), "-p", str(port), "root@127.0.0.1", *command]


# Host side, inside a private mount namespace: the cached root with a writable layer on top (the
# gateway's directory; the cache is never written), then systemd-nspawn booting it. The overlay is
# unmounted with the namespace when nspawn ends, however it ends. Arguments: LOWER GWDIR NSPAWN...
NSPAWN_SCRIPT: Final = """\
set -eu
lower=$1 gw=$2
shift 2
mount -t overlay -o "lowerdir=$lower,upperdir=$gw/upper,workdir=$gw/work" gateway "$gw/root"
exec "$@"
"""


def _prepare_upper(gw: Gateway, rootfs: Path, port: int, key: Path) -> None:
    """The gateway's own files in the overlay's upper layer: its sshd port, a fresh host key, the
    authorized client key, its host name. Directories get the modes they have in the cached root."""
    upper = gw.path / "upper"
    for rel in ("etc/ssh/sshd_config.d", "etc/systemd/system.conf.d", "root/.ssh"):
        for part in [*reversed(Path(rel).parents[:-1]), Path(rel)]:
            (upper / part).mkdir(exist_ok=True)
            lower = rootfs / part
            (upper / part).chmod(lower.stat().st_mode & 0o7777 if lower.exists() else 0o700)
    (upper / "etc/ssh/sshd_config.d/port.conf").write_text(f"Port {port}\n")
    host_key = upper / "etc/ssh/ssh_host_ed25519_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{gw.name}", "-f", str(host_key)],
        stdin=subprocess.DEVNULL,
        check=True,
    )
    authorized = upper / "root/.ssh/authorized_keys"
    shutil.copyfile(key.with_name(key.name + ".pub"), authorized)
    authorized.chmod(0o600)
    (upper / "etc/hostname").write_text(gw.name + "\n")
    # The CPU an arm64 gateway's QEMU emulates, for its services and SSH sessions (ignored natively)
    (upper / "etc/systemd/system.conf.d/qemu-cpu.conf").write_text(
        f"[Manager]\nDefaultEnvironment={QEMU_ENV}\n"
    )
    (upper / "etc/environment").write_text(QEMU_ENV + "\n")
    public = host_key.with_name(host_key.name + ".pub").read_text().split()[:2]
    gw.known_hosts(port).write_text(f"[127.0.0.1]:{port} {' '.join(public)}\n")
    gw.ssh_config.write_text(
        "# The test gateways of scripts/testbeds.py: pass with ssh -F (EDGEBUNDLE_SSH_COMMAND).\n"
        "Host *\n"
        f"    IdentityFile {key}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {gw.base}/known_hosts.%p\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
        "    ConnectTimeout 10\n"
        "    LogLevel ERROR\n"
    )


def gateway_up(
    name: str, arch: str, ssh_port: int, key: Path = CI_KEY, cache: Path | None = None
) -> dict[str, object]:
    """Boot gateway ``name`` (a leftover one of that name is stopped first) and wait until root can
    log in over SSH on 127.0.0.1:``ssh_port`` and systemd says running (or degraded)."""
    gw = _gateway(name, cache)
    if not 1024 <= ssh_port <= 65535:
        raise BedError(f"--ssh-port {ssh_port}: expected 1024-65535")
    if os.geteuid() != 0:
        raise BedError("a gateway needs root (mounts, systemd-nspawn)")
    if shutil.which("systemd-nspawn") is None:
        raise BedError("systemd-nspawn: not found (apt-get install systemd-container)")
    if not key.is_file() or not key.with_name(key.name + ".pub").is_file():
        raise BedError(f"{key}: no such SSH key (bash scripts/ci-services.sh makes it) or no {key}.pub")
    if not os.path.ismount(NSPAWN_RUNTIME) and not Path("/run/systemd/system").is_dir():
        raise BedError(f"{NSPAWN_RUNTIME} is not a tmpfs here (bash scripts/ci-services.sh mounts one)")
    rootfs = ensure_gateway(arch, cache)
    started = time.monotonic()
    with locked(gw.base / f".{name}.lock"):
        if gw.info() is not None or gw.path.exists():
            gateway_down(name, cache, locked_already=True)
        if port_open(ssh_port):
            raise BedError(f"port {ssh_port} on 127.0.0.1 is taken: choose another --ssh-port")
        for directory in ("upper", "work", "root"):
            (gw.path / directory).mkdir(parents=True)
        _prepare_upper(gw, rootfs, ssh_port, key)
        nspawn = [
            shutil.which("systemd-nspawn") or "systemd-nspawn",
            "--keep-unit",
            "--register=no",
            "--console=read-only",
            "-D",
            str(gw.path / "root"),
            "-M",
            name,
            "-b",
        ]
        with open(gw.console, "wb") as console:
            proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "/bin/sh",
                    "-c",
                    NSPAWN_SCRIPT,
                    "gateway",
                    str(rootfs.resolve()),
                    str(gw.path),
                    *nspawn,
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this process; `down` ends it
            )
        info: dict[str, object] = {
            "name": name,
            "arch": arch,
            "ssh_port": ssh_port,
            "pid": proc.pid,
            "url": f"ssh://root@127.0.0.1:{ssh_port}",
            "ssh_command": f"ssh -F {gw.ssh_config}",
            "rootfs": str(rootfs),
        }
        gw.info_path.write_text(json.dumps(info, indent=1) + "\n")
        deadline = time.monotonic() + GATEWAY_BOOT_TIMEOUT_S
        state = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = gw.console.read_text(errors="replace").strip().splitlines()[-5:]
                raise BedError(
                    f"gateway {name}: systemd-nspawn ended (exit {proc.returncode}): {' | '.join(tail)}"
                )
            if port_open(ssh_port):
                try:
                    check = subprocess.run(
                        ssh_argv(gw, ssh_port, "systemctl", "is-system-running", "--wait"),
                        capture_output=True,
                        text=True,
                        stdin=subprocess.DEVNULL,
                        timeout=max(1.0, deadline - time.monotonic()),
                        check=False,
                    )
                    state = check.stdout.strip()
                except subprocess.TimeoutExpired:
                    state = "timed out"
                if state in ("running", "degraded"):
                    break
            time.sleep(0.5)
        else:
            raise BedError(
                f"gateway {name}: not up after {GATEWAY_BOOT_TIMEOUT_S:.0f} s "
                f"(systemd: {state or 'no ssh yet'}); see {gw.console}"
            )
        info["state"] = state
        info["boot_seconds"] = round(time.monotonic() - started, 1)
        gw.info_path.write_text(json.dumps(info, indent=1) + "\n")
    say(f"gateway {name} ({arch}) {state} in {info['boot_seconds']} s: {info['url']}")
    return info


def _stop_nspawn(gw: Gateway, pid: int, info: Mapping[str, object], port: int | None) -> None:
    """Power the gateway off from inside (systemd's own shutdown, over SSH: the one way that works for
    an emulated gateway too, whose systemd does not see the SIGRTMIN+3 nspawn's SIGTERM sends it),
    then SIGTERM (a clean poweroff of a native one), a second SIGTERM (nspawn ends at once), SIGKILL."""

    def ended(wait: float) -> bool:
        deadline = time.monotonic() + wait
        while nspawn_pid(info, gw.name) is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    if port is not None and gw.ssh_config.is_file():
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                ssh_argv(gw, port, "systemctl", "poweroff", "--no-block"),
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=20,
                check=False,
            )
        if ended(GATEWAY_STOP_TIMEOUT_S):
            return
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if ended(wait):
            return
    raise BedError(f"gateway {gw.name}: systemd-nspawn (pid {pid}) does not end")


def gateway_down(name: str, cache: Path | None = None, *, locked_already: bool = False) -> bool:
    """Stop gateway ``name`` (poweroff, else SIGTERM, twice: see _stop_nspawn) and
    remove its state. Whether one was running."""
    gw = _gateway(name, cache)
    with contextlib.ExitStack() as stack:
        if not locked_already:
            stack.enter_context(locked(gw.base / f".{name}.lock"))
        info = gw.info() or {}
        pid = nspawn_pid(info, name)
        port = info.get("ssh_port")
        if pid is not None:
            _stop_nspawn(gw, pid, info, port if isinstance(port, int) else None)
        if isinstance(port, int):
            gw.known_hosts(port).unlink(missing_ok=True)
        remove_tree(gw.path)
    if pid is not None:
        say(f"gateway {name} stopped")
    return pid is not None


def gateway_list(cache: Path | None = None) -> list[dict[str, object]]:
    base = (cache or cache_root()) / ".gateways"
    found = []
    for path in sorted(base.glob("*/gateway.json")):
        gw = _gateway(path.parent.name, cache)
        info = gw.info() or {"name": gw.name}
        found.append({**info, "running": nspawn_pid(info, gw.name) is not None})
    return found


GATEWAY_COMMANDS: Final = ("gateway", "up", "down", "list")


def add_gateway_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    arch = host_arch() if host_arch() in ARCHES else "amd64"
    root = sub.add_parser("gateway", help="print the path of a gateway root (bookworm, systemd, sshd)")
    root.add_argument("--arch", choices=ARCHES, default=arch)
    up = sub.add_parser("up", help="boot a gateway with systemd-nspawn; sshd on 127.0.0.1:PORT")
    up.add_argument("name")
    up.add_argument("--arch", choices=ARCHES, default=arch)
    up.add_argument("--ssh-port", type=int, required=True)
    up.add_argument("--key", type=Path, default=CI_KEY, help=f"the client's private key (default {CI_KEY})")
    up.add_argument("--json", action="store_true", help="print what the gateway is as JSON")
    down = sub.add_parser("down", help="stop a gateway and remove its state")
    down.add_argument("name")
    sub.add_parser("list", help="the gateways brought up, one JSON object a line")


def gateway_command(args: argparse.Namespace) -> int:
    if args.command == "gateway":
        print(ensure_gateway(args.arch))
    elif args.command == "up":
        info = gateway_up(args.name, args.arch, args.ssh_port, args.key)
        if args.json:
            print(json.dumps(info))
        else:
            print(f"{info['url']}\nEDGEBUNDLE_SSH_COMMAND='{info['ssh_command']}'")
    elif args.command == "down":
        gateway_down(args.name)
    else:
        for info in gateway_list():
            print(json.dumps(info))
    return 0


# --- the command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="testbeds.py", description="Old and bare Linux roots to run a built binary in."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    root = sub.add_parser("root", help="print the path of a Debian root, made on first use")
    root.add_argument("suite", choices=[SUITE])
    root.add_argument("--arch", choices=ARCHES, default=host_arch() if host_arch() in ARCHES else "amd64")
    bare = sub.add_parser("bare", help="print the path of a root with a static busybox only")
    bare.add_argument("--arch", choices=ARCHES, default=host_arch() if host_arch() in ARCHES else "amd64")
    run = sub.add_parser("run", help="run a command inside a root (as root)")
    run.add_argument("rootfs", help="the root filesystem (what root or bare printed)")
    run.add_argument("--bind", action="append", default=[], metavar="HOST:INSIDE[:ro]")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--cwd", default="/", help="working directory inside the root (default /)")
    run.add_argument("cmd", nargs="+", metavar="CMD")
    sub.add_parser("clean", help="remove every bed (stopping every gateway)")
    add_gateway_commands(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "root":
            print(ensure_bullseye(args.arch))
        elif args.command == "bare":
            print(ensure_bare(args.arch))
        elif args.command == "clean":
            clean()
        elif args.command in GATEWAY_COMMANDS:
            return gateway_command(args)
        else:
            if not args.rootfs or not Path(args.rootfs).is_dir():
                raise BedError(f"{args.rootfs!r}: not a directory")
            if os.geteuid() != 0:
                raise BedError("run needs root (a mount namespace, chroot)")
            env = {}
            for pair in args.env:
                key, eq, value = pair.partition("=")
                if not eq or not key:
                    raise BedError(f"--env {pair}: expected KEY=VALUE")
                env[key] = value
            command = run_argv(
                Path(args.rootfs), args.cmd, binds=[Bind.parse(s) for s in args.bind], env=env, cwd=args.cwd
            )
            os.execv(command[0], command)
    except BedError as err:
        say(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
