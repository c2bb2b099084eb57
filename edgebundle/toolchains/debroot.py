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

The root is made by mmdebstrap (bootstrap.py) from the host's own apt mirror (aptsources.py); every
command runs in a private mount namespace, then ``chroot`` (namespace.py); pip inside uses the host's
pip settings (pipconfig.py); roots.py lists and removes what the cache holds.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Final

from ..errors import BuildError, ConfigError, ToolMissingError
from ..proc import TIMEOUT_S, Echo, LineHandler, default_echo, run
from ..target import (
    Arch,
    BackendName,
    DebianPin,
    Target,
    host_arch,
    interpreters,
    root_parallel_compiles,
    root_source_build_packages,
    source_build_needs,
)
from . import (
    Invocation,
    cache_dir,
    ccjobs,
    content_key,
    create_cached,
    du,
    is_complete,
    log_path,
    pip_install,
    pip_install_argv,
    pip_wheel_argv,
    reproducible_env,
)
from . import requirements as pinned_requirements
from .aptsources import DEFAULT_KEYRING, default_sources, host_sources, select_sources
from .binfmt import ensure_registered, qemu_cpu_env
from .bootstrap import ca_certificates_hook, mmdebstrap_argv
from .namespace import Bind, namespace_argv, remove_mount_point
from .pipconfig import pip_config_files, pip_environment, pip_local_paths, pip_settings
from .roots import roots_dir
from .venv import pinned_version, source_builds

# Inside the root while it is made (not /tmp: each command gets a /tmp of its own)
SOURCE_WHEELS: Final = PurePosixPath("/opt/edgebundle/wheels")
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
VENV: Final = PurePosixPath("/opt/edgebundle/venv")
INSIDE_PATH: Final = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_INSTALL: Final = "apt-get install mmdebstrap arch-test qemu-user-static"
EXTRA_CA_DIR: Final = Path("/usr/local/share/ca-certificates")


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
        # Source builds a root makes too (pins.toml's [build-from-source-in-roots]), with their packages
        in_roots = root_source_build_packages()
        self.source_builds = {
            name: settings for name, settings in source_builds(target.interpreter).items() if name in in_roots
        }
        build_packages = [package for name in self.source_builds for package in in_roots[name]]
        self.packages = sorted(
            {*APT_PACKAGES, *apt_packages, *(p.package for p in self.from_debian), *build_packages}
        )
        # (without source builds, the key a root has had since the first: no cached root orphaned)
        extra = [self.source_builds] if self.source_builds else []
        self.key = content_key(
            LAYOUT_VERSION, SUITE, self.debian_arch, target.python, self.packages, self.requires, *extra
        )
        self.path = roots_dir() / f"{target.name}-{self.key}"
        self.echo: Echo = default_echo
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
            "source_builds": self.source_builds,
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
        sources_text = select_sources(host_sources(), SUITE)
        if sources_text is None:
            if not DEFAULT_KEYRING.is_file():
                raise ToolMissingError(
                    f"the host's apt sources have no Debian {SUITE} and {DEFAULT_KEYRING} is missing; "
                    "apt-get install debian-archive-keyring"
                )
            sources_text = default_sources(SUITE)
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
                suite=SUITE,
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
            wheels = [
                self._source_wheel(rootfs, name, settings, binds, log)
                for name, settings in self.source_builds.items()
            ]
            pip_install(
                self.target,
                self.arch,
                lambda: self._inside(
                    rootfs,
                    pip_install_argv(self.python, [*wheels, *self.requires]),
                    log=log,
                    what=f"pip install in the {self.target.name} build root",
                    timeout=TIMEOUT_S["pip install"],
                    binds=binds,
                    env={**pip_environment(os.environ), "HOME": "/root"},
                ),
            )
        finally:
            for bind in binds:
                remove_mount_point(rootfs, bind.path)
            shutil.rmtree(rootfs / SOURCE_WHEELS.relative_to("/"), ignore_errors=True)
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

    def _source_wheel(
        self, rootfs: Path, name: str, settings: list[str], binds: list[Bind], log: Path
    ) -> str:
        """A wheel of the pinned ``name`` built from its sdist inside the root, as a host venv's
        (toolchains/venv.py): the path inside the root, for the pip install that follows."""
        version = pinned_version(self.requires, name)
        self.echo(f"  building {name} {version} from source in the root (minutes under QEMU)")
        jobs: dict[str, str] = {}
        if name in root_parallel_compiles():
            ccjobs.install(rootfs)
            jobs = ccjobs.environment()
        self._inside(
            rootfs,
            [*pip_wheel_argv(self.python, name, version, settings, str(SOURCE_WHEELS)), "--quiet"],
            log=log,
            what=f"building {name} {version} from source in the {self.target.name} build root (needs "
            f"{source_build_needs(name)})",
            timeout=TIMEOUT_S["source build"],
            binds=binds,
            env={**pip_environment(os.environ), "HOME": "/root", **jobs},
        )
        found = sorted((rootfs / SOURCE_WHEELS.relative_to("/")).glob(f"{name}-{version}-*.whl"))
        if len(found) != 1:
            raise BuildError(
                f"pip wheel {name}=={version} in the build root made {len(found)} wheels; see {log}"
            )
        return str(SOURCE_WHEELS / found[0].name)

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
        if self.emulated:
            env.update(qemu_cpu_env())
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
