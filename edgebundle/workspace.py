"""The builder's scratch directories: one private base per user, one locked directory per build.

A build stages its files at a fixed path per inputs (``$TMPDIR/edgebundle-build-UID/NAME``), because
paths end up in the frozen program (code objects, archive tables) and a random directory would make two
builds of the same inputs differ. A fixed path in a shared /tmp is a classic target, so the base is
trusted only when it is a real directory (not a symlink) owned by this user with no access for anyone
else, as the C launcher checks its cache; anything else is refused, never followed.

Each scratch directory has a lock file held for as long as a process works in it. A directory whose
lock nobody holds belongs to a process that is gone (SIGKILL, a power cut): the next build, and
``edgebundle cache clean``, remove it. ``--keep-build-dir`` marks a directory to be kept until then.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError

KEEP_MARKER = ".kept"


def _base() -> Path:
    return Path(tempfile.gettempdir()) / f"edgebundle-build-{os.getuid()}"


def private_tmp() -> Path:
    """``$TMPDIR/edgebundle-build-UID``, created 0700 or checked to be this user's own and private."""
    base = _base()
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o700)
    try:
        st = os.lstat(base)
    except OSError as exc:
        raise OutputError(f"{base}: cannot create the build directory: {exc.strerror}") from None
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.getuid():
        problem = f"is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    elif st.st_mode & 0o077:
        problem = f"is accessible to other users (mode {stat.S_IMODE(st.st_mode):04o})"
    if problem:
        raise OutputError(
            f"{base}: the private build directory {problem}; another user may have planted it: "
            "remove it, or set TMPDIR to a directory of your own"
        )
    return base


@dataclass(frozen=True)
class Scratch:
    """One entry of the private base: a scratch directory and whether a live process holds it."""

    path: Path
    in_use: bool
    kept: bool


def _lock_path(workdir: Path) -> Path:
    return workdir.with_name(f".{workdir.name}.lock")


@contextlib.contextmanager
def scratch(name: str, *, keep: bool = False) -> Iterator[Path]:
    """An empty directory ``private_tmp()/name``, locked while the context lasts, removed after it
    unless ``keep``. Stale directories of other, dead processes are swept first. Two processes asking
    for the same name take turns."""
    base = private_tmp()
    sweep(base)
    workdir = base / name
    fd = os.open(_lock_path(workdir), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(workdir, ignore_errors=True)  # a kept or interrupted earlier one
        workdir.mkdir(mode=0o700)
        try:
            yield workdir
        finally:
            if keep:
                (workdir / KEEP_MARKER).touch()
            else:
                shutil.rmtree(workdir, ignore_errors=True)


def entries(base: Path | None = None) -> list[Scratch]:
    """The scratch directories under ``base`` (default: this user's private base, when it exists)."""
    if base is None:
        if not _base().is_dir() or _base().is_symlink():
            return []  # nothing staged yet: not a reason to create the base
        base = private_tmp()
    out = []
    for path in sorted(base.iterdir()):
        if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue
        out.append(Scratch(path=path, in_use=_held(path), kept=(path / KEEP_MARKER).exists()))
    return out


def sweep(base: Path, *, include_kept: bool = False) -> list[Path]:
    """Remove the scratch directories under ``base`` that no live process holds (and kept ones too
    with ``include_kept``). Returns what was removed."""
    removed = []
    for entry in entries(base):
        if entry.kept and not include_kept:
            continue
        if remove_if_free(entry.path):
            removed.append(entry.path)
    return removed


def _held(workdir: Path) -> bool:
    try:
        fd = os.open(_lock_path(workdir), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    with os.fdopen(fd) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
    return False


def remove_if_free(workdir: Path) -> bool:
    """Remove ``workdir`` unless a live process holds it; whether it was removed."""
    fd = os.open(_lock_path(workdir), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live build works in it
        shutil.rmtree(workdir, ignore_errors=True)
        return True
