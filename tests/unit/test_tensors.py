"""runtime/tensors.py against NumPy: the .npy bytes NumPy writes, the arrays NumPy reads, the values."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import pytest

from edgebundle.runtime.tensors import NpyError, npy_bytes, read_arrays, read_npy, read_npz
from tests.unit.arrays import tensor

DTYPES = [
    "float32",
    "float16",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "bool",
]
SHAPES = [(), (0,), (1,), (7,), (1, 10), (2, 3, 4), (1, 28, 28, 1), (12345678901, 0)]


def npy(arr: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)  # type: ignore[no-untyped-call]
    return buf.getvalue()


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(5)
    return (rng.normal(0, 100, shape) if "float" in dtype else rng.integers(0, 100, shape)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_npy_bytes_are_numpys(dtype: str, shape: tuple[int, ...]) -> None:
    arr = np.zeros(shape, dtype=dtype) if 0 in shape else sample(dtype, shape)
    assert npy_bytes(tensor(arr)) == npy(arr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_are_numpys(dtype: str) -> None:
    arr = sample(dtype, (3, 5))
    assert tensor(arr).values() == arr.reshape(-1).tolist()


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_reads_what_numpy_writes(order: str, byteorder: str, version: tuple[int, int]) -> None:
    arr = np.asarray(sample("float32", (2, 3, 4)).astype(byteorder + "f4"), order=order)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version, allow_pickle=False)  # type: ignore[no-untyped-call]
    got = read_npy(buf.getvalue())
    assert (got.dtype, got.shape) == ("float32", (2, 3, 4))
    assert got.data == np.ascontiguousarray(arr, dtype="=f4").tobytes()


def test_reads_npz_stored_and_deflated() -> None:
    a, b = sample("int8", (4,)), sample("float32", (1, 2))
    for saver in (np.savez, np.savez_compressed):
        buf = io.BytesIO()
        saver(buf, a=a, b=b)
        got = read_arrays(buf.getvalue())
        assert isinstance(got, dict)
        assert got == {"a": tensor(a), "b": tensor(b)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "neither"),
        (b"hello", "neither"),
        (b"\x93NUMPY\x09\x00" + bytes(8), "version"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}", "header"),
        (npy(np.zeros(3, dtype="complex64")), "dtype"),
        (npy(np.zeros(4, dtype="float32"))[:-4], "bytes of data"),
        (npy(np.array(["a"])), "dtype"),
        (b"PK\x03\x04broken", "npz"),
    ],
)
def test_refuses_what_it_cannot_read(data: bytes, message: str) -> None:
    with pytest.raises(NpyError, match=message):
        read_arrays(data)


def test_npz_members_go_through_the_npy_reader() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", b"not npy")
    with pytest.raises(NpyError, match="magic"):
        read_npz(buf.getvalue())


def test_a_stored_npz_is_read_without_zipfile_and_checked() -> None:
    from edgebundle.runtime.npz import write_npz

    arrays = {"a": tensor(sample("int8", (4,))), "b/c": tensor(sample("float32", (2, 3)))}
    buf = io.BytesIO()
    write_npz(buf, arrays)
    data = buf.getvalue()
    from edgebundle.runtime import tensors

    assert tensors._stored_members(data) is not None
    assert read_npz(data) == arrays
    damaged = bytearray(data)
    damaged[data.index(b"\x93NUMPY") + 60] ^= 1
    with pytest.raises(NpyError, match="CRC"):
        read_npz(bytes(damaged))


@pytest.mark.parametrize("shape", [(), (7,), (2, 3), (1, 28, 28, 1), (0, 4)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_numpys_headers_are_read_without_ast(
    shape: tuple[int, ...], order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NumPy's own header form takes the fast path (``ast`` costs the self-test 3 ms and ~0.8 MB)."""
    import ast

    arr = np.asfortranarray(sample("float32", shape)) if order == "F" and shape else sample("float32", shape)
    data = npy(arr)

    def refuse(text: str) -> None:
        raise AssertionError(f"ast used for {text!r}")

    monkeypatch.setattr(ast, "literal_eval", refuse)
    assert read_npy(data) == tensor(arr)


def test_other_headers_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    header = b"{'shape': (2,), 'fortran_order': False, 'descr': '<i2'}"  # another writer's key order
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x01\x00\x02\x00"
    assert read_npy(data).values() == [1, 2]
