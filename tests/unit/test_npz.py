"""Output files written whole or not at all: what ``--save-outputs`` (and the builder's reference
run) rely on."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from edgebundle.runtime.npz import AtomicOutput, OutputError, save_npz
from tests.unit.arrays import tensor


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_writes_reproducibly_through_a_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    save_npz(out, {"a": tensor(np.arange(3))})
    first = out.read_bytes()
    save_npz(out, {"a": tensor(np.arange(3))})
    assert out.read_bytes() == first
    with np.load(out) as data:
        assert data["a"].tolist() == [0, 1, 2]
    assert leftovers(tmp_path) == []


def test_a_symlink_stays_and_its_target_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "real.npz").write_bytes(b"old")
    (tmp_path / "link.npz").symlink_to("real.npz")
    save_npz(tmp_path / "link.npz", {"a": tensor(np.zeros(1))})
    assert (tmp_path / "link.npz").is_symlink()
    assert (tmp_path / "real.npz").read_bytes().startswith(b"PK")


def test_what_cannot_become_a_regular_file_is_refused_before_any_work(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    own = tmp_path / "app"
    own.write_bytes(b"\x7fELF")
    st = own.stat()
    cases = {
        str(tmp_path): "is a directory",
        str(fifo): "not a regular file",
        str(tmp_path / "sock"): "not a regular file",
        "/dev/null": "not a regular file",
        str(own): "is this program itself",
        str(tmp_path / "missing" / "out.npz"): "cannot write: No such file or directory",
        str(tmp_path / ("x" * 300 + ".npz")): "cannot write: File name too long",
        "/proc/out.npz": "cannot write",
        "/sys/out.npz": "cannot write",
    }
    try:
        for path, message in cases.items():
            with pytest.raises(OutputError) as info:
                AtomicOutput(path, refuse={(st.st_dev, st.st_ino)})
            assert str(info.value).startswith(f"{path}: {message}"), path
            assert "\n" not in str(info.value)
    finally:
        sock.close()
    assert leftovers(tmp_path) == []


def test_a_long_name_that_fits_gets_a_temp_file_that_fits_too(tmp_path: Path) -> None:
    out = tmp_path / ("y" * 250 + ".npz")  # 254 bytes: the ".name.PID.tmp" form would not fit
    save_npz(out, {"a": tensor(np.zeros(1))})
    assert out.is_file()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EIO])
def test_a_failed_write_removes_the_temp_file_and_leaves_the_old_file(tmp_path: Path, code: int) -> None:
    out = tmp_path / "out.npz"
    out.write_bytes(b"previous")
    output = AtomicOutput(out)
    assert len(leftovers(tmp_path)) == 1  # created up front: the directory takes new files

    def write(f: IO[bytes]) -> None:
        f.write(b"half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(OutputError, match=f"^{out}: cannot write: {os.strerror(code)}$"):
        output.commit(write)
    assert out.read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


def test_discard_removes_an_unused_temp_file(tmp_path: Path) -> None:
    output = AtomicOutput(tmp_path / "out.npz")
    output.discard()
    output.discard()
    assert list(tmp_path.iterdir()) == []
