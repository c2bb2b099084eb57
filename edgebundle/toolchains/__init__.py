"""Where a build runs: a managed virtual environment on the host (``venv``), or a Debian root of the
target's architecture, emulated by QEMU when it is foreign (``debroot``). Both satisfy ``Toolchain``,
so a backend never knows which: it gets ``python`` and its argv runs through ``run``.

Toolchains sit below the backends: what a backend needs of one (its pins, its Debian packages) is
passed in as data, and which one a build uses is the build's choice (edgebundle/buildenv.py).

What goes into either is computed once, here (``requirements``), so that a host venv and a build root
for the same target and backend hold exactly the same pins.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import BuildError, ConfigError, EdgeBundleError
from ..proc import Echo, LineHandler
from ..target import BackendName, Target, backend_requires, common_requires, interpreters

COMPLETE = ".complete"  # written last, inside the directory, just before it is renamed into place


@dataclass(frozen=True, kw_only=True)
class Invocation:
    """A command as the host starts it: for a build root this is the whole unshare/chroot wrapper."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path | None


class Toolchain(Protocol):
    @property
    def python(self) -> str:
        """The build environment's Python, as the first element of a command line."""
        ...

    @property
    def library_root(self) -> Path | None:
        """Where a binary built here finds its shared libraries when run on this host under QEMU
        (``QEMU_LD_PREFIX``); None when it runs natively."""
        ...

    def describe(self) -> str: ...

    def ensure(self, echo: Echo) -> None:
        """Create the environment if it does not exist yet (cached across builds)."""
        ...

    def invocation(self, argv: list[str], *, cwd: Path | None = None) -> Invocation:
        """How the host runs ``argv`` inside the environment, for callers that handle the result
        themselves. ``cwd`` (and every path the command uses must be under it) is visible at the same
        absolute path inside."""
        ...

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
        """Run a command inside the environment (argv[0] may be ``self.python``) through
        edgebundle/proc.py; ``on_line`` gets each line of its output as it arrives (progress). Past
        ``timeout`` seconds (proc.TIMEOUT_S has one per kind of command) it is ended."""
        ...


# 1980-01-01: the earliest timestamp a zip member (PyInstaller's archives, wheels) can hold.
DEFAULT_SOURCE_DATE_EPOCH = "315532800"


def reproducible_env() -> dict[str, str]:
    """Set for every command a build runs, so that the same inputs give byte-identical binaries:
    a fixed hash seed (PyInstaller orders archive members by iterating sets) and a fixed
    SOURCE_DATE_EPOCH for timestamps (the user's own value wins, as reproducible-builds.org asks)."""
    return {
        "PYTHONHASHSEED": "0",
        "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_SOURCE_DATE_EPOCH),
    }


def cache_dir() -> Path:
    """``$EDGEBUNDLE_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgebundle``, else ``~/.cache/edgebundle``."""
    explicit = os.environ.get("EDGEBUNDLE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgebundle"


def requirements(target: Target, backend: BackendName) -> list[str]:
    """Every pip requirement of a build environment for ``target`` and ``backend``, sorted."""
    pins = interpreters()[target.interpreter]
    return sorted({*common_requires(), *pins.requires, *backend_requires(backend), *target.extra_requires})


def content_key(*parts: object) -> str:
    """A short hash of what an environment contains: the same pins give the same cache directory."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


# Pure-Python distributions published as sdists only (Nuitka has no Linux wheels on PyPI): building
# them compiles nothing, so they are the same on every host and quick under QEMU too.
PURE_SDISTS = ("nuitka",)


def pip_install_argv(python: str, requires: list[str]) -> list[str]:
    """Binary wheels only: a source build would compile for minutes under QEMU and differ per host."""
    names = {re.split(r"[=<>!~\[; ]", r, maxsplit=1)[0].lower() for r in requires}
    return [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        *(f"--no-binary={name}" for name in PURE_SDISTS if name in names),
        *requires,
    ]


def pip_wheel_argv(python: str, name: str, version: str, settings: list[str], wheel_dir: str) -> list[str]:
    """A wheel of ``name``==``version`` built from its sdist with the pip config ``settings``."""
    return [
        python,
        "-m",
        "pip",
        "wheel",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-binary",
        name,
        "--wheel-dir",
        wheel_dir,
        f"{name}=={version}",
        *settings,
    ]


_NO_DISTRIBUTION = re.compile(r"No matching distribution found for (\S+)")


def no_wheel_error(target: Target, arch: str, pip_output: str) -> ConfigError | None:
    """pip found no wheel for one of the pins: name it, the arch and the Python, and what to change."""
    found = _NO_DISTRIBUTION.search(pip_output)
    if found is None:
        return None
    return ConfigError(
        f"{target.path}: {found.group(1)} has no binary wheel for {arch} and Python {target.python}; "
        "choose another interpreter (--interpreter) or python in the target file"
    )


def pip_install(target: Target, arch: str, install: Callable[[], object]) -> None:
    """Run ``install`` (a pip install through some runner), turning 'no wheel' into a ConfigError."""
    try:
        install()
    except EdgeBundleError as exc:
        better = no_wheel_error(target, arch, str(exc))
        if better is not None:
            raise better from None
        raise


@contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """An exclusive lock next to a cached environment: a second build waits, then reuses it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file()


def read_metadata(path: Path) -> dict[str, Any]:
    """What ``create_cached`` recorded about an environment ({} for an older or plain marker)."""
    try:
        data = json.loads((path / COMPLETE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def log_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.log")


def create_cached(
    path: Path,
    *,
    echo: Echo,
    what: str,
    make: Callable[[Path, Path], None],
    metadata: Mapping[str, Any],
) -> None:
    """Create a cached environment at ``path`` once: under a lock, in ``.NAME.partial`` (a leftover of
    an interrupted run is deleted first, never used), marked complete last, then renamed into place.
    ``make(tmp, log)`` fills ``tmp``."""
    if is_complete(path):
        return
    with locked(lock_path(path)):
        if is_complete(path):
            return  # made by a concurrent build while we waited
        tmp = partial_path(path)
        log = log_path(path)
        if tmp.exists():
            echo(f"removing {tmp} (left by an interrupted run)")
        remove_tree(tmp)
        log.unlink(missing_ok=True)
        echo(f"creating {what} {path} (first build only; log: {log})")
        try:
            make(tmp, log)
            (tmp / COMPLETE).write_text(json.dumps(dict(metadata), indent=1, sort_keys=True) + "\n")
            remove_tree(path)  # an incomplete directory of an older layout
            os.replace(tmp, path)
        finally:
            remove_tree(tmp)


_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space in a path as \040


def mounts_under(path: Path, mountinfo: str) -> list[str]:
    """Mount points at or below ``path`` in /proc/self/mountinfo text (field 5 is the mount point)."""
    prefix = str(path.resolve()) if path.exists() else str(path)
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """``rm -r``, refusing a tree with something mounted in it (removing it would delete through a
    bind mount into the host's own files)."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        mountinfo = ""
    mounted = mounts_under(path, mountinfo)
    if mounted:
        raise BuildError(
            f"{path}: not removed because {mounted[0]} is mounted inside it; run umount -R {mounted[0]} "
            "and retry"
        )
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise BuildError(
            f"{path}: cannot remove it ({exc.strerror}: {exc.filename}); a build root belongs to root: "
            f"sudo rm -r {path}"
        ) from None


def du(path: Path) -> int:
    """Bytes used by the files under ``path`` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total
