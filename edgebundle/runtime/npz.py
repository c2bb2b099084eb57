"""Writing ``.npz`` files byte-for-byte reproducibly (NumPy's savez stamps each member with the
current time), and any output file whole or not at all (a temp file renamed into place)."""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import IO

from .tensors import Tensor, npy_bytes

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry


class OutputError(Exception):
    """An output path that cannot be written, in one line naming it."""


class AtomicOutput:
    """A regular file written whole or not at all.

    Everything that can be checked is checked when it is created, before the caller does any work:
    the path, followed through symlinks (the link stays and its target is replaced), must be a
    regular file or not exist, must not be one of ``refuse`` (``(st_dev, st_ino)`` pairs: the
    running binary), and its directory must take a new file: the temp file that ``commit`` fills and
    renames over it is created right away (a read-only file system, a missing directory, /proc, a
    name too long all fail here). ``discard`` (or a failed ``commit``) removes the temp file."""

    def __init__(self, path: str | Path, refuse: Collection[tuple[int, int]] = ()) -> None:
        self.path = str(path)
        self.target = Path(os.path.realpath(path))
        try:
            st: os.stat_result | None = os.stat(self.target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise self._error(exc) from None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise OutputError(f"{self.path}: is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise OutputError(f"{self.path}: not a regular file (a device, FIFO or socket)")
            if (st.st_dev, st.st_ino) in refuse:
                raise OutputError(f"{self.path}: is this program itself")
        name = os.fsencode(self.target.name)
        try:
            name_max = os.pathconf(self.target.parent, "PC_NAME_MAX")
        except OSError as exc:
            raise self._error(exc) from None
        # A name too long failed os.stat already; the temp file's must fit too: shorten the part of
        # it borrowed from the name, the pid keeps it unique.
        suffix = f".{os.getpid()}.tmp".encode()
        tmp_name = b"." + name[: max(1, name_max - len(suffix) - 1)] + suffix
        self.tmp: Path | None = self.target.parent / os.fsdecode(tmp_name)
        try:
            self._fd: int | None = os.open(
                self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666
            )
        except OSError as exc:
            self.tmp = None
            raise self._error(exc) from None

    def commit(self, write: Callable[[IO[bytes]], None]) -> None:
        """Fill the temp file with ``write`` and rename it over the path; OutputError (the temp file
        removed) when the system refuses (disk full, file too large, I/O error)."""
        assert self._fd is not None, "committed twice"
        assert self.tmp is not None
        try:
            with os.fdopen(self._fd, "wb") as f:
                self._fd = None
                write(f)
            os.replace(self.tmp, self.target)
            self.tmp = None
        except OSError as exc:
            raise self._error(exc) from None
        finally:
            self.discard()

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"{self.path}: cannot write: {exc.strerror or exc}")


def write_npz(f: IO[bytes], arrays: dict[str, Tensor]) -> None:
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, npy_bytes(value))


def save_npz(out: str | Path | AtomicOutput, arrays: dict[str, Tensor]) -> None:
    """``arrays`` as an .npz file, whole or not at all: at a path, or into an output opened before."""
    (out if isinstance(out, AtomicOutput) else AtomicOutput(out)).commit(lambda f: write_npz(f, arrays))
