"""Every file the CLI writes goes through here: checked before any work starts, written atomically.

``check`` refuses, before anything is built or measured, an output path that would destroy
something (an input of the same command, a directory, a device node, a FIFO, a socket) or that cannot
be written at all (a read-only or full file system, a name too long, /proc): as root, ``-o
/dev/null`` would otherwise replace the device node and ``-o model.tflite`` the model. ``write`` and
``install`` put a finished file in place with one rename from a temporary name in the same
directory, and turn any OS error into one line naming the path; nothing half-written stays behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError

# Linux's limit on one path component, in bytes (every local file system we build on).
NAME_MAX = 255


def check(path: Path, what: str, *, inputs: Iterable[Path] = (), create_parent: bool = True) -> Path:
    """Refuse ``path`` as the output ``what`` (e.g. "-o") unless it is a regular file or absent,
    is none of ``inputs``, and a file can really be created next to it. Creates missing parent
    directories (when ``create_parent``). Returns ``path``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"{path}: {what}: cannot use this path: {reason(exc)}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{path}: {what} is a directory; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(
                f"{path}: {what} is a {_kind(st.st_mode)}, not a regular file; refusing to replace it"
            )
    for source in inputs:
        same = os.path.realpath(source) == os.path.realpath(path)
        with contextlib.suppress(OSError):
            same = same or os.path.samefile(source, path)  # a hard link, a bind mount
        if same:
            raise OutputError(f"{path}: {what} names an input of this command ({source}); refusing")
    parent = path.parent
    if create_parent:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{parent}: cannot create the directory for {what}: {reason(exc)}") from None
    # The one check that answers for every file system (read-only, full, /proc, permissions, as root
    # too): create and remove a file next to the output. (A name over NAME_MAX already failed os.stat.)
    try:
        with _temporary(path, "check"):
            pass
    except OSError as exc:
        raise OutputError(f"{path}: {what}: cannot write here: {reason(exc)}") from None
    return path


def write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file next to it, then one rename)."""
    try:
        with _temporary(path, "tmp") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
            os.replace(f.name, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {reason(exc)}") from None


def install(finished: Path, path: Path) -> None:
    """Move ``finished`` (a file in ``path``'s directory) to ``path`` in one rename, refusing again
    if ``path`` became something that is not a regular file meanwhile."""
    check(path, "the output", create_parent=False)
    try:
        os.replace(finished, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {reason(exc)}") from None


def partial_name(path: Path) -> Path:
    """Where a file for ``path`` is assembled: hidden, in the same directory (so that the final rename
    is atomic), named after the process that owns it (``sweep_partials`` removes orphans)."""
    return _sibling(path, "partial")


def sweep_partials(path: Path) -> list[Path]:
    """Remove the ``partial_name``s of ``path`` whose process is gone (killed with SIGKILL, a power
    cut): those of live processes are another build's, writing now."""
    removed = []
    prefix = _sibling(path, "partial").name.rsplit("-", 1)[0] + "-"
    with contextlib.suppress(OSError):
        for candidate in path.parent.iterdir():
            pid = candidate.name.removeprefix(prefix)
            if candidate.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    candidate.unlink()
                    removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _sibling(path: Path, tag: str) -> Path:
    name = f".{path.name}.{tag}-{os.getpid()}"
    if len(name.encode()) > NAME_MAX:
        # a long output name (legal up to 255 bytes) still gets a temporary name in its directory
        name = f".{hashlib.sha256(path.name.encode()).hexdigest()[:16]}.{tag}-{os.getpid()}"
    return path.with_name(name)


@contextlib.contextmanager
def _temporary(path: Path, tag: str) -> Iterator[BinaryIO]:
    """A new file next to ``path`` (never an existing one, never through a symlink), removed on exit
    unless it was renamed."""
    tmp = _sibling(path, tag)
    try:
        with open(tmp, "wb", opener=_create_new) as f:  # f.name is the temporary path
            yield f
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _create_new(name: str, _flags: int) -> int:
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def reason(exc: OSError) -> str:
    """An OS error in words a user acts on."""
    hints = {
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "read-only file system",
        errno.ENAMETOOLONG: "file name too long",
        errno.EDQUOT: "disk quota exceeded",
    }
    return hints.get(exc.errno or 0) or exc.strerror or type(exc).__name__
