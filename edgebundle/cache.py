"""What edgebundle keeps between runs, and removing it: ``edgebundle cache`` / ``cache clean``.

Kinds, all under ``cache_dir()`` but the last:

    envs      build environments (a venv per target, backend and pins)         envs/
    wheels    NumPy built from source without OpenBLAS, once per host          wheels/
    runners   the model-independent part of binaries, per target and backend   runners/
    roots     Debian build roots (foreign arch, --isolated)                    roots/
    nuitka    Nuitka's and ccache's compile caches                             nuitka/
    runtimes  runtimes unpacked by binaries run on this machine                run/
    logs      logs of recent builds                                            logs/
    staging   scratch directories of builds ($TMPDIR/edgebundle-build-UID)

Every removal respects the lock its owner takes: a build, a root being made or a binary running from
an unpacked runtime keeps what it uses; ``clean`` says what it left and why. Without a kind, ``clean``
removes only what nothing can use again: scratch directories and partial entries whose process is
gone, interrupted and stale build roots.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from . import workspace
from .toolchains import cache_dir, du, lock_path, remove_tree

Kind = Literal["envs", "wheels", "runners", "roots", "nuitka", "runtimes", "logs", "staging"]
KINDS: tuple[Kind, ...] = get_args(Kind)

_FOLDERS: dict[Kind, str] = {
    "envs": "envs",
    "wheels": "wheels",
    "runners": "runners",
    "roots": "roots",
    "nuitka": "nuitka",
    "runtimes": "run",
    "logs": "logs",
}


@dataclass(frozen=True, kw_only=True)
class Entry:
    kind: Kind
    path: Path
    size_bytes: int
    state: str  # ready | in use | partial | stale | interrupted | kept

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "path": str(self.path), "size_bytes": self.size_bytes, "state": self.state}


def folder(kind: Kind) -> Path | None:
    """Where ``kind`` lives (None for staging, which has a base of its own)."""
    return cache_dir() / _FOLDERS[kind] if kind in _FOLDERS else None


def entries(kinds: tuple[Kind, ...] = KINDS) -> list[Entry]:
    """Everything cached of ``kinds``, with sizes and states."""
    found: list[Entry] = []
    for kind in kinds:
        if kind == "staging":
            found += [
                Entry(
                    kind="staging",
                    path=s.path,
                    size_bytes=du(s.path),
                    state="in use" if s.in_use else "kept" if s.kept else "stale",
                )
                for s in workspace.entries()
            ]
            continue
        base = folder(kind)
        if base is None or not base.is_dir():
            continue
        if kind == "roots":
            from .buildenv import current_root_names
            from .toolchains.roots import list_roots

            found += [
                Entry(kind="roots", path=r.path, size_bytes=r.size_bytes, state=r.state)
                for r in list_roots(current_root_names())
            ]
            continue
        if kind in ("nuitka", "logs"):
            found.append(Entry(kind=kind, path=base, size_bytes=du(base), state="ready"))
            continue
        for path in sorted(base.iterdir()):
            if path.name.startswith(".") and not path.name.endswith(".partial") and ".tmp." not in path.name:
                continue  # lock files
            if path.is_dir() and not path.is_symlink():
                found.append(Entry(kind=kind, path=path, size_bytes=du(path), state=_state(kind, path)))
            elif path.suffix == ".log":
                continue  # counted with the entry it belongs to
    return found


def _state(kind: Kind, path: Path) -> str:
    if path.name.endswith(".partial") or ".tmp." in path.name:
        return "partial"
    if kind == "runtimes":
        return "in use" if _runtime_in_use(path) else "ready"
    return "ready"


def _runtime_in_use(path: Path) -> bool:
    # every running program holds a shared flock on its runtime directory (launcher.c, try_exec)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def default_selection(entry: Entry) -> bool:
    """What ``clean`` without a kind removes: what nothing can use again."""
    return entry.state in ("stale", "partial", "interrupted")


def clean(
    selected: Callable[[Entry], bool], echo: Callable[[str], None], *, kinds: tuple[Kind, ...] = KINDS
) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """Remove the entries of ``kinds`` that ``selected`` picks. Returns (removed, [(left, why)])."""
    removed: list[Entry] = []
    left: list[tuple[Entry, str]] = []
    for entry in entries(kinds):
        if not selected(entry):
            continue
        if entry.state == "in use":
            left.append((entry, "in use"))
            continue
        with _owner_lock(entry) as free:
            if not free:
                left.append((entry, "in use"))
                continue
            echo(f"removing {entry.path} ({entry.size_bytes / 1e6:.0f} MB)")
            if entry.kind == "staging":
                if not workspace.remove_if_free(entry.path):
                    left.append((entry, "in use"))
                    continue
            else:
                remove_tree(entry.path)
                Path(f"{entry.path}.log").unlink(missing_ok=True)
            removed.append(entry)
    return removed, left


@contextlib.contextmanager
def _owner_lock(entry: Entry) -> Iterator[bool]:
    """The lock the entry's owner takes while it makes or uses it, taken without waiting: whether it
    was free (an entry without such a lock is free)."""
    lock_file = _lock_file(entry)
    fd = -1
    if lock_file is not None:
        with contextlib.suppress(OSError):
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        free = True
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                free = False
        yield free
    finally:
        if fd >= 0:
            os.close(fd)


def _lock_file(entry: Entry) -> Path | None:
    if entry.kind == "runtimes":
        return entry.path.parent / ".lock"  # the launcher unpacks under it
    if entry.kind in ("envs", "wheels", "runners", "roots"):
        return lock_path(entry.path.with_name(entry.path.name.strip(".").removesuffix(".partial")))
    return None  # staging: workspace.remove_if_free takes the directory's own lock; nuitka, logs: none
