"""A Debian bookworm root of the target's architecture, with the target's Python and a venv holding
the pinned requirements a host venv holds (``toolchains.requirements``, as binary wheels), except
that a pin listed under ``[interpreters.NAME.debian-root]`` in pins.toml comes from Debian's own
package (NumPy: bookworm's python3-numpy, linked to the small reference BLAS, where the PyPI wheel
bundles OpenBLAS; the host venv builds it from source without BLAS, which under QEMU would take longer
than the rest of the build). Foreign architectures run through QEMU user-mode emulation.

Why a whole root: PyInstaller and Nuitka are not cross-compilers. They pick the bootloader by
``platform.machine()``, bundle the running interpreter, import packages in hook subprocesses and
resolve libraries with ``ldd``, so the build itself must run as the target's arch. The same root on
the native arch (``--isolated``) gives builds independent of the user's environment, with bookworm's
glibc as the floor.

Layout of the cache (``cache_dir()/roots``)::

    arm64-<hash>/rootfs/       the root filesystem (mmdebstrap --mode=root)
    arm64-<hash>/.complete     JSON: what is in it; written last, then the directory is renamed
    .arm64-<hash>.partial/     a creation in progress (or interrupted: deleted, never used)
    .arm64-<hash>.lock         flock: a second build waits, then reuses
    arm64-<hash>.log           everything the creation ran, with its output

Every command runs in a private mount namespace (``unshare --mount --propagation private``) where
proc, sys, dev and a tmpfs /tmp are mounted into the root and the command's working directory is
bind-mounted at the same absolute path, then ``chroot``: the backend's argv (absolute paths into the
build directory) works unchanged, and nothing stays mounted once the command exits.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import unquote, urlparse

from ..errors import BuildError, ConfigError, ToolMissingError
from ..proc import TIMEOUT_S, Echo, LineHandler, run, stderr_echo
from ..target import Arch, BackendName, DebianPin, Target, host_arch, interpreters
from . import (
    Invocation,
    cache_dir,
    content_key,
    create_cached,
    du,
    is_complete,
    lock_path,
    locked,
    log_path,
    pip_install,
    pip_install_argv,
    read_metadata,
    remove_tree,
    reproducible_env,
)
from . import requirements as pinned_requirements
from .binfmt import ensure_registered

LAYOUT_VERSION = "1"  # bump when the way roots are made changes: every cached root is then rebuilt
SUITE: Final = "bookworm"
SUITE_PYTHON: Final[dict[str, str]] = {"bookworm": "3.11"}  # Debian's python3 of each suite
DEBIAN_ARCH: Final[dict[Arch, str]] = {"x86_64": "amd64", "aarch64": "arm64"}
# What every root gets from Debian; pip installs the rest into the venv. libpython3.11: PyInstaller
# bundles the shared library; binutils/patchelf: PyInstaller (objdump, strip) and Nuitka (patchelf);
# ca-certificates: pip over HTTPS. What a backend and the C launcher need besides is theirs to say:
# the layers above pass it in (``apt_packages`` of DebRoot; backends.apt_packages).
APT_PACKAGES: Final = (
    "python3",
    "python3-venv",
    "libpython3.11",
    "binutils",
    "patchelf",
    "ca-certificates",
)
# Documentation is never used in a build root; leaving it out saves dpkg work under QEMU.
DPKG_OPTIONS: Final = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
VENV: Final = PurePosixPath("/opt/edgebundle/venv")
INSIDE_PATH: Final = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_INSTALL: Final = "apt-get install mmdebstrap arch-test qemu-user-static"
DEFAULT_KEYRING: Final = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# When the host's own apt sources have no Debian bookworm (an Ubuntu CI runner, say).
DEFAULT_SOURCES: Final = f"""\
Types: deb
URIs: http://deb.debian.org/debian
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: {DEFAULT_KEYRING}

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: {DEFAULT_KEYRING}
"""
EXTRA_CA_DIR: Final = Path("/usr/local/share/ca-certificates")
HOST_SOURCES: Final = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))

# Runs on the host side, inside the new mount namespace, before chroot. Arguments:
#   ROOTFS EMULATED(0|1) USERNS(0|1) [MODE:PATH ...] -- COMMAND...
# MODE:PATH binds the host's directory PATH at the same path inside the root, read-write (rw) or
# read-only (ro).
# The empty tmpfs over /sys/devices/system/cpu works around ai-edge-litert 2.2/2.3 crashing under
# Debian's qemu 7.2 after reading the host's CPU cache topology there (we pin 2.1.6, which does
# not, but a user's --interpreter pin may). In a user namespace (an unprivileged user running an
# existing root) proc and sysfs cannot be mounted afresh without new PID and network namespaces, so
# the host's are bound; no PID namespace also means the command's own exit status or signal (a
# crash of the interpreter on a bad model) reaches the caller unchanged.
MOUNT_SCRIPT: Final = """\
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
if [ "$emulated" = 1 ]; then mount -t tmpfs -o size=64k,mode=755 nocpuinfo "$root/sys/devices/system/cpu"; fi
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


def ca_certificates_hook(certificates: Iterable[Path]) -> str | None:
    """An mmdebstrap setup hook copying the host's extra CA certificates into the new root before
    any package is installed: ca-certificates' own postinst then runs update-ca-certificates with
    them (a second run under QEMU costs ~40 s)."""
    commands = []
    for cert in certificates:
        inside = PurePosixPath("/") / cert.relative_to("/")
        dest = '"$1"' + shlex.quote(str(inside))
        commands.append(
            f'mkdir -p "$1"{shlex.quote(str(inside.parent))} && cp {shlex.quote(str(cert))} {dest}'
        )
    return " && ".join(commands) if commands else None


def mmdebstrap_argv(
    *,
    debian_arch: str,
    packages: Iterable[str],
    rootfs: Path,
    sources: Path,
    setup_hooks: Iterable[str] = (),
    suite: str = SUITE,
) -> list[str]:
    """mmdebstrap in its own private mount namespace, so that whatever it mounts inside the root
    while installing goes away with it, even when it is killed.

    The ``essential`` variant: Essential:yes packages plus ours, installed by the host's apt; no apt
    inside (nothing in a build runs it), so fewer packages to configure under QEMU."""
    return [
        *PRIVATE_MOUNTS,
        "--kill-child",
        "--",
        "mmdebstrap",
        "--mode=root",
        "--variant=essential",
        "--format=directory",
        f"--arch={debian_arch}",
        f"--include={','.join(sorted(packages))}",
        *(f"--dpkgopt={opt}" for opt in DPKG_OPTIONS),
        "--aptopt=Acquire::Retries 3",
        *(f"--setup-hook={hook}" for hook in setup_hooks),
        suite,
        str(rootfs),
        str(sources),
    ]


# --- apt sources -------------------------------------------------------------------------------


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif raw[0] in " \t" and key:
            current[key] += "\n" + raw
        elif ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip()
            current[key] = value.strip()
    return stanzas


def _one_line_stanzas(text: str) -> list[dict[str, str]]:
    stanzas = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        options: dict[str, str] = {}
        if words[1].startswith("["):
            end = next(i for i, w in enumerate(words) if w.endswith("]"))
            for opt in " ".join(words[1 : end + 1]).strip("[]").split():
                name, _, value = opt.partition("=")
                options[name] = value
            words = [words[0], *words[end + 1 :]]
        if len(words) < 3:
            continue
        stanza = {"Types": "deb", "URIs": words[1], "Suites": words[2], "Components": " ".join(words[3:])}
        if "signed-by" in options:
            stanza["Signed-By"] = options["signed-by"]
        stanzas.append(stanza)
    return stanzas


def select_sources(files: Iterable[tuple[str, str]], suite: str = SUITE) -> str | None:
    """The host's apt sources for ``suite`` (``bookworm``, ``bookworm-updates``, ...) as deb822, so
    that the root comes from the same mirror (or snapshot, or proxy) as the host's packages.

    ``files`` are (name, text) of sources.list-style (one-line) and ``.sources`` (deb822) files.
    Architecture restrictions are dropped (the root's arch is another); disabled stanzas, deb-src and
    other suites are left out. None when nothing matches.
    """
    out = []
    for name, text in files:
        stanzas = _deb822_stanzas(text) if name.endswith(".sources") else _one_line_stanzas(text)
        for stanza in stanzas:
            if stanza.get("Enabled", "yes").lower() == "no":
                continue
            if "deb" not in stanza.get("Types", "").split():
                continue
            suites = [s for s in stanza.get("Suites", "").split() if s == suite or s.startswith(suite + "-")]
            if not suites or not stanza.get("URIs"):
                continue
            kept = {
                k: v for k, v in stanza.items() if k not in ("Architectures", "Types", "Suites", "Enabled")
            }
            lines = ["Types: deb", f"Suites: {' '.join(suites)}", *(f"{k}: {v}" for k, v in kept.items())]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out) if out else None


def host_sources(paths: Iterable[Path] = HOST_SOURCES) -> list[tuple[str, str]]:
    files: list[tuple[str, str]] = []
    for path in paths:
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in candidates:
            if file.suffix in (".list", ".sources") and file.is_file():
                files.append((file.name, file.read_text(errors="replace")))
    return files


# --- pip configuration -------------------------------------------------------------------------

# PIP_* variables that would redirect an install away from the venv, or name a file by a host path.
PIP_ENV_DROPPED: Final = frozenset(
    {"PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_USER", "PIP_PYTHON", "PIP_CONFIG_FILE", "PIP_SRC"}
)
PROXY_ENV: Final = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
ENV_PIP_CONF: Final = PurePosixPath("/etc/edgebundle/pip-env.conf")  # PIP_CONFIG_FILE, copied in


def pip_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What pip inside the root inherits from the host's environment: PIP_* and proxies."""
    env = {k: v for k, v in environ.items() if k.startswith("PIP_") and k not in PIP_ENV_DROPPED}
    for name in PROXY_ENV:
        for key in (name, name.upper()):
            if key in environ:
                env[key] = environ[key]
    if environ.get("PIP_CONFIG_FILE") and environ["PIP_CONFIG_FILE"] != os.devnull:
        env["PIP_CONFIG_FILE"] = str(ENV_PIP_CONF)
    return env


def pip_config_files(environ: Mapping[str, str], home: Path) -> list[tuple[Path, PurePosixPath]]:
    """(host path, path inside the root) of every pip configuration the host's pip reads: site-wide
    (``$XDG_CONFIG_DIRS/pip/*``, including files they refer to, and /etc/pip.conf), the user's (to
    /root, the HOME of pip steps inside) and ``$PIP_CONFIG_FILE``."""
    found: list[tuple[Path, PurePosixPath]] = []
    for directory in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":"):
        pip_dir = Path(directory) / "pip"
        if directory and pip_dir.is_dir():
            found += [(f, PurePosixPath(f)) for f in sorted(pip_dir.iterdir()) if f.is_file()]
    found.append((Path("/etc/pip.conf"), PurePosixPath("/etc/pip.conf")))
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    found.append((config_home / "pip" / "pip.conf", PurePosixPath("/root/.config/pip/pip.conf")))
    found.append((home / ".pip" / "pip.conf", PurePosixPath("/root/.pip/pip.conf")))
    if environ.get("PIP_CONFIG_FILE") and environ["PIP_CONFIG_FILE"] != os.devnull:
        found.append((Path(environ["PIP_CONFIG_FILE"]), ENV_PIP_CONF))
    return [(host, inside) for host, inside in found if host.is_file()]


def _config_items(path: Path) -> list[tuple[str, str]]:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except (configparser.Error, UnicodeDecodeError):
        return []
    return [(key, value) for section in parser.sections() for key, value in parser.items(section)]


def pip_local_paths(items: Iterable[tuple[str, str]]) -> list[str]:
    """Host paths that pip settings point at (find-links directories, ``file://`` indexes,
    constraint files, ...), so that pip inside the root can see them too.

    For a ``file://`` index the parent directory is returned: a PEP 503 page under ``simple/``
    usually links to files beside it (``../../files/...``).
    """
    paths: list[str] = []
    for key, value in items:
        for token in value.split():
            if token.startswith("file://"):
                path = unquote(urlparse(token).path).rstrip("/")
                if "index-url" in key and path.count("/") > 1:
                    path = path.rsplit("/", 1)[0]
            elif token.startswith("/"):
                path = token.rstrip("/") or "/"
            else:
                continue
            if path not in paths:
                paths.append(path)
    return paths


def pip_settings(environ: Mapping[str, str], config_files: Iterable[Path]) -> list[tuple[str, str]]:
    """(key, value) of every pip setting: from the config files, then PIP_* (``PIP_FIND_LINKS`` ->
    ``find-links``)."""
    items = [item for file in config_files for item in _config_items(file)]
    for key, value in environ.items():
        if key.startswith("PIP_") and key not in PIP_ENV_DROPPED:
            items.append((key[4:].lower().replace("_", "-"), value))
    return items


# --- the toolchain -----------------------------------------------------------------------------


def debian_requirements(requires: Iterable[str], pins: Iterable[DebianPin], where: str) -> list[str]:
    """The pip requirements of a root: each pin Debian provides becomes ``NAME==<Debian's version>``,
    which pip finds already satisfied by the package (the venv sees the system's site-packages)."""
    out = list(requires)
    for pin in pins:
        found = [i for i, r in enumerate(out) if r.lower().startswith(f"{pin.distribution.lower()}==")]
        if not found:
            raise ConfigError(
                f"{where}: [debian-root.{pin.distribution}]: {pin.distribution} has no "
                f"{pin.distribution}==VERSION pin to stand for"
            )
        for i in found:
            out[i] = pin.requirement
    return sorted(out)


# Run by the root's venv Python once the root is made: its version and, for each pin taken from
# Debian, the version and the directory it is imported from (JSON).
CHECK_SCRIPT: Final = (
    "import importlib.metadata as m, json, platform, sys; "
    "d = {n: [m.distribution(n).version, str(m.distribution(n).locate_file(''))] for n in sys.argv[1:]}; "
    "print(json.dumps({'python': platform.python_version(), 'machine': platform.machine(), 'debian': d}))"
)


def check_debian_pins(pins: Iterable[DebianPin], found: Mapping[str, list[str]]) -> None:
    """Every pin taken from Debian must be the version pins.toml names, imported from Debian's
    directory: otherwise pip quietly installed the PyPI wheel (a new Debian point release with
    another upstream version, say), and the binary would bundle what the pin is there to avoid."""
    for pin in pins:
        version, location = found.get(pin.distribution, ["(missing)", ""])
        if version != pin.version or PurePosixPath(location).is_relative_to(VENV):
            raise BuildError(
                f"the build root's {pin.distribution} is {version} from {location or '?'}; pins.toml "
                f"expects {pin.version} from Debian's {pin.package}: update "
                f"[interpreters.*.debian-root.{pin.distribution}].version to the version {SUITE} has"
            )


class DebRoot:
    """A cached Debian root for one target and backend; see the module docstring. ``apt_packages``
    are what the backend and the launcher need from Debian besides the root's own APT_PACKAGES (they
    are part of the root's key: another list is another root)."""

    def __init__(self, target: Target, backend: BackendName, *, apt_packages: Iterable[str]) -> None:
        self.target = target
        self.backend = backend
        self.arch: Arch = target.arch
        self.debian_arch = DEBIAN_ARCH[target.arch]
        self.emulated = target.arch != host_arch()
        suite_python = SUITE_PYTHON[SUITE]
        if target.python != suite_python:
            raise ConfigError(
                f"{target.path}: python = {target.python!r}, but a build root (Debian {SUITE}) has Python "
                f'{suite_python}; set python = "{suite_python}" or build on a {target.arch} host with '
                f"Python {target.python} (without --isolated)"
            )
        self.from_debian = interpreters()[target.interpreter].debian_root
        self.requires = debian_requirements(
            pinned_requirements(target, backend), self.from_debian, where="edgebundle/pins.toml"
        )
        self.packages = sorted({*APT_PACKAGES, *apt_packages, *(p.package for p in self.from_debian)})
        self.key = content_key(
            LAYOUT_VERSION, SUITE, self.debian_arch, target.python, self.packages, self.requires
        )
        self.path = roots_dir() / f"{target.name}-{self.key}"
        self.echo: Echo = stderr_echo
        self.privileged = os.geteuid() == 0

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def python(self) -> str:
        return str(VENV / "bin" / "python")

    @property
    def library_root(self) -> Path | None:
        return self.rootfs if self.emulated else None

    @property
    def kind(self) -> str:
        how = "emulated" if self.emulated else "isolated"
        return f"{how} {self.debian_arch} Debian {SUITE} build root"

    def describe(self) -> str:
        return f"{self.kind} {self.path}"

    def exists(self) -> bool:
        return is_complete(self.path)

    def metadata(self) -> dict[str, object]:
        return {
            "kind": "debroot",
            "target": self.target.name,
            "backend": self.backend,
            "suite": SUITE,
            "arch": self.debian_arch,
            "python": self.target.python,
            "packages": self.packages,
            "requires": self.requires,
            "key": self.key,
        }

    # -- creating ---------------------------------------------------------------------------------

    def ensure(self, echo: Echo) -> None:
        self.echo = echo
        if self.emulated:
            # Needed to create the root and every time it is used; cheap to check.
            ensure_registered(self.arch, echo)
        if self.exists():
            return
        self._check_can_create()
        create_cached(
            self.path,
            echo=echo,
            what=f"the {self.kind}",
            make=self._make,
            metadata=self.metadata(),
        )

    def _check_can_create(self) -> None:
        for tool in ("mmdebstrap", "unshare", "chroot"):
            if shutil.which(tool) is None:
                raise ToolMissingError(f"{tool}: not found; creating a build root needs it: {APT_INSTALL}")
        if self.emulated and shutil.which("arch-test") is None:
            raise ToolMissingError(
                f"arch-test: not found; mmdebstrap needs it for a foreign root: {APT_INSTALL}"
            )
        if not self.privileged:
            cache = shlex.quote(str(cache_dir()))
            raise ToolMissingError(
                f"creating the {self.target.name} build root needs root (mmdebstrap --mode=root); run: "
                f"sudo env EDGEBUNDLE_CACHE_DIR={cache} {_self_command()} "
                f"toolchain install {shlex.quote(self.target.name)} --backend {self.backend}"
            )

    def _make(self, tmp: Path, log: Path) -> None:
        started = time.monotonic()
        tmp.mkdir(parents=True)
        rootfs = tmp / "rootfs"
        sources_text = select_sources(host_sources())
        if sources_text is None:
            if not DEFAULT_KEYRING.is_file():
                raise ToolMissingError(
                    f"the host's apt sources have no Debian {SUITE} and {DEFAULT_KEYRING} is missing; "
                    "apt-get install debian-archive-keyring"
                )
            sources_text = DEFAULT_SOURCES
        sources = tmp / "apt.sources"
        sources.write_text(sources_text)
        total = 5
        self._step(
            1, total, f"Debian {SUITE} {self.debian_arch} with {', '.join(self.packages)} (mmdebstrap)"
        )
        extra_cas = sorted(EXTRA_CA_DIR.rglob("*.crt")) if EXTRA_CA_DIR.is_dir() else []
        hook = ca_certificates_hook(extra_cas)
        if hook:
            self.echo(f"  with the host's extra CA certificates: {' '.join(map(str, extra_cas))}")
        run(
            mmdebstrap_argv(
                debian_arch=self.debian_arch,
                packages=self.packages,
                rootfs=rootfs,
                sources=sources,
                setup_hooks=[hook] if hook else [],
            ),
            log=log,
            echo=self.echo,
            what="mmdebstrap",
            timeout=TIMEOUT_S["build root"],
        )
        self._step(2, total, "the host's pip configuration")
        config_files = self._copy_pip_config(rootfs)
        self._check_ca_certificates(rootfs, extra_cas)
        self._step(3, total, f"a venv at {VENV}")
        # Pins taken from Debian live in the system's site-packages, which the venv then sees.
        system = ["--system-site-packages"] if self.from_debian else []
        self._inside(
            rootfs,
            ["/usr/bin/python3", "-m", "venv", *system, str(VENV)],
            log=log,
            what="python3 -m venv",
            timeout=TIMEOUT_S["pip install"],  # venv runs ensurepip
        )
        self._step(4, total, f"pip install {' '.join(self.requires)}")
        binds = self._pip_binds(rootfs, config_files)
        try:
            pip_install(
                self.target,
                self.arch,
                lambda: self._inside(
                    rootfs,
                    pip_install_argv(self.python, self.requires),
                    log=log,
                    what=f"pip install in the {self.target.name} build root",
                    timeout=TIMEOUT_S["pip install"],
                    binds=binds,
                    env={**pip_environment(os.environ), "HOME": "/root"},
                ),
            )
        finally:
            for bind in binds:
                _remove_mount_point(rootfs, bind.path)
        self._step(5, total, "checking the root's Python")
        out = self._inside(
            rootfs,
            [self.python, "-c", CHECK_SCRIPT, *(p.distribution for p in self.from_debian)],
            log=log,
            what="python in the build root",
            timeout=TIMEOUT_S["model probe"],  # a Python start under QEMU
        )
        try:
            found = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BuildError(f"python in the build root printed {out!r}; see {log}") from None
        version = found["python"]
        if not version.startswith(self.target.python + "."):
            raise ToolMissingError(f"the build root's Python is {version}; expected {self.target.python}")
        check_debian_pins(self.from_debian, found["debian"])
        took = time.monotonic() - started
        debian = "".join(f", {n} {v} from Debian" for n, (v, _) in sorted(found["debian"].items()))
        size = f"{du(tmp) / 1e6:.0f} MB"
        self.echo(f"build root ready: Python {version} {found['machine']}{debian}, {size}, {took:.0f} s")

    def _step(self, n: int, total: int, text: str) -> None:
        self.echo(f"[{n}/{total}] {text}")

    def _copy_pip_config(self, rootfs: Path) -> list[Path]:
        copied = []
        for host, inside in pip_config_files(os.environ, Path.home()):
            dest = rootfs / inside.relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(host, dest)
            self.echo(f"+ cp {host} {dest}")
            copied.append(host)
        return copied

    def _check_ca_certificates(self, rootfs: Path, extra_cas: list[Path]) -> None:
        """Extra CAs the host trusts (a TLS-inspecting proxy's, a company's) must be in the root's
        bundle, or HTTPS to the package index fails inside it."""
        bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
        text = bundle.read_text(errors="replace") if bundle.is_file() else ""
        for cert in extra_cas:
            body = "".join(cert.read_text(errors="replace").split())
            if body and body not in "".join(text.split()):
                raise BuildError(
                    f"{cert} did not reach {bundle} (see {log_path(self.path)}); "
                    "check that update-ca-certificates accepts it on this host"
                )

    def _pip_binds(self, rootfs: Path, config_files: list[Path]) -> list[Bind]:
        """Local paths the host's pip settings use: a small file is copied in, a directory (a
        wheelhouse, a file:// index) is bound read-only for the pip step only."""
        binds = []
        for path in pip_local_paths(pip_settings(os.environ, config_files)):
            host = Path(path)
            inside = rootfs / path.lstrip("/")
            if not host.exists() or inside.exists() or inside.is_symlink():
                continue
            if host.is_dir():
                binds.append(Bind(path=path, read_only=True))
            elif host.is_file():
                inside.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(host, inside)
        return binds

    # -- running ----------------------------------------------------------------------------------

    def inside_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The whole environment of a command in the root: nothing of the host's leaks in."""
        env = {"PATH": INSIDE_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
        env.update(reproducible_env())
        env.update(extra or {})
        return env

    def invocation(self, argv: list[str], *, cwd: Path | None = None) -> Invocation:
        return self._invocation(self.rootfs, argv, cwd=cwd)

    def _invocation(
        self,
        rootfs: Path,
        argv: list[str],
        *,
        cwd: Path | None = None,
        binds: list[Bind] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Invocation:
        shared = [Bind(path=str(cwd.resolve()))] if cwd is not None else []
        host_env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}
        host_env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        return Invocation(
            argv=namespace_argv(
                rootfs=rootfs,
                argv=argv,
                cwd=str(cwd.resolve()) if cwd is not None else None,
                env=self.inside_env(env),
                binds=[*shared, *(binds or [])],
                emulated=self.emulated,
                privileged=self.privileged,
            ),
            env=host_env,
            cwd=None,
        )

    def run(
        self,
        argv: list[str],
        *,
        log: Path | None,
        what: str,
        timeout: float,
        cwd: Path | None = None,
        on_line: LineHandler | None = None,
    ) -> str:
        self.echo(f"+ [{self.path.name}] {shlex.join(argv)}")
        inv = self.invocation(argv, cwd=cwd)
        return run(
            inv.argv,
            log=log,
            env=inv.env,
            cwd=inv.cwd,
            what=what,
            timeout=timeout,
            echo=None,
            on_line=on_line,
        )

    def _inside(
        self,
        rootfs: Path,
        argv: list[str],
        *,
        log: Path,
        what: str,
        timeout: float,
        binds: list[Bind] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        self.echo(f"+ [{self.path.name}] {shlex.join(argv)}")
        inv = self._invocation(rootfs, argv, binds=binds, env=env)
        return run(inv.argv, log=log, env=inv.env, what=what, timeout=timeout, echo=None)


def _self_command() -> str:
    """How to run this edgebundle again from a shell (sudo's PATH may not find it)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "edgebundle" and script.exists():
        return shlex.quote(str(script.resolve()))
    return f"{shlex.quote(sys.executable)} -m edgebundle"


def _remove_mount_point(rootfs: Path, path: str) -> None:
    """Remove the empty directories the mount script made for a bind, up to the first one that
    existed before (or holds anything)."""
    current = rootfs / path.lstrip("/")
    while current != rootfs:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


# --- managing the cache ------------------------------------------------------------------------


def roots_dir() -> Path:
    return cache_dir() / "roots"


@dataclass(frozen=True, kw_only=True)
class RootInfo:
    """One directory under roots/, as ``edgebundle toolchain list`` shows it."""

    name: str
    path: Path
    state: str  # ready | stale (pins changed since) | interrupted (will be rebuilt)
    size_bytes: int
    target: str
    backend: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "state": self.state,
            "size_bytes": self.size_bytes,
            "target": self.target,
            "backend": self.backend,
        }


def list_roots(current_keys: Iterable[str] = ()) -> list[RootInfo]:
    """Every root in the cache; ``current_keys`` are the names the current pins would use."""
    base = roots_dir()
    if not base.is_dir():
        return []
    current = set(current_keys)
    found = []
    for entry in sorted(base.iterdir()):
        if not entry.is_dir():
            continue
        partial = entry.name.startswith(".") and entry.name.endswith(".partial")
        name = entry.name[1 : -len(".partial")] if partial else entry.name
        meta = read_metadata(entry)
        if partial or not is_complete(entry):
            state = "interrupted"
        else:
            state = "ready" if name in current else "stale"
        found.append(
            RootInfo(
                name=name,
                path=entry,
                state=state,
                size_bytes=du(entry),
                target=str(meta.get("target", name.rsplit("-", 1)[0])),
                backend=str(meta.get("backend", "?")),
            )
        )
    return found


def remove_roots(target_name: str, echo: Echo) -> list[Path]:
    """Delete every root (any backend, any pins, complete or not) of ``target_name``."""
    removed = []
    for info in list_roots():
        if info.target != target_name:
            continue
        final = info.path if not info.path.name.startswith(".") else info.path.with_name(info.name)
        with locked(lock_path(final)):
            echo(f"+ rm -r {info.path}")
            remove_tree(info.path)
            log_path(final).unlink(missing_ok=True)
        lock_path(final).unlink(missing_ok=True)
        removed.append(info.path)
    return removed
