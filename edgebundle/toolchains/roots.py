"""The cache of Debian build roots (``cache_dir()/roots``), as ``edgebundle toolchain list`` and
``edgebundle cache`` show it: which roots there are, ready, stale or interrupted, and removing them.
Which names are current is the caller's to say (edgebundle/buildenv.py knows the backends)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..proc import Echo
from . import cache_dir, du, is_complete, lock_path, locked, log_path, read_metadata, remove_tree


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
