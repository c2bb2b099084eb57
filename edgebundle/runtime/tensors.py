"""Tensors as the runtime passes them around, without NumPy: a dtype name (NumPy's: float32, int8, ...),
a shape and the bytes (native byte order, C order); their values as Python numbers, and the .npy
format (read: raw inputs and the self-test's reference; written: ``--save-outputs``), byte for byte
what NumPy writes.

The interpreter binding turns these into whatever it needs (runtime/model.py); the rest of the
runtime reads them without NumPy.
"""

from __future__ import annotations

import binascii
import math
import struct
import sys
from array import array
from collections.abc import Iterable
from typing import NamedTuple

# dtype name -> struct format character (native) and the .npy type code (byte order added)
_TYPES: dict[str, tuple[str, str]] = {
    "float32": ("f", "f4"),
    "float16": ("e", "f2"),
    "float64": ("d", "f8"),
    "int8": ("b", "i1"),
    "uint8": ("B", "u1"),
    "int16": ("h", "i2"),
    "uint16": ("H", "u2"),
    "int32": ("i", "i4"),
    "uint32": ("I", "u4"),
    "int64": ("q", "i8"),
    "uint64": ("Q", "u8"),
    "bool": ("?", "b1"),
}
_BY_CODE = {code: name for name, (_, code) in _TYPES.items()}
_NATIVE = "<" if sys.byteorder == "little" else ">"
NPY_MAGIC = b"\x93NUMPY"
_F32 = struct.Struct("=f")


def f32(value: float) -> float:
    """``value`` rounded to the nearest float32 (as NumPy stores a float32 result)."""
    result: float = _F32.unpack(_F32.pack(value))[0]
    return result


def f32s(values: list[float]) -> list[float]:
    """Each value rounded to the nearest float32 (``array("f")`` rounds a whole list in C)."""
    return array("f", values).tolist()


def dequantized(codes: Iterable[float], scale: float, zero_point: int) -> list[float]:
    """Quantized codes as real numbers: (x - zero_point) * scale, in float32 as TFLite and NumPy."""
    s = f32(scale)
    return f32s([x * s for x in f32s([c - zero_point for c in codes])])


def struct_format(dtype: str) -> str:
    """The struct format character of one element of ``dtype`` (native byte order)."""
    return _TYPES[dtype][0]


def itemsize(dtype: str) -> int:
    return struct.calcsize("=" + _TYPES[dtype][0])


class Tensor(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith("float")

    def values(self) -> list[float] | list[int]:
        """Every element, flat in C order, as Python numbers (float32 values exactly)."""
        fmt = _TYPES[self.dtype][0]
        if fmt == "e":  # memoryview has no half floats before Python 3.12
            return list(struct.unpack(f"={self.size}e", self.data))
        values: list[float] | list[int] = memoryview(self.data).cast(fmt).tolist()  # type: ignore[call-overload]
        return values


def is_known(dtype: str) -> bool:
    return dtype in _TYPES


def pack(dtype: str, values: list[float] | list[int]) -> bytes:
    """Python numbers as the elements of ``dtype`` (native byte order; no rounding or clipping
    beyond the type's own: callers quantize first)."""
    return struct.pack(f"={len(values)}{_TYPES[dtype][0]}", *values)


# --------------------------------------------------------------------------------------------- .npy

_GROWTH_AXIS_MAX_DIGITS = 21  # NumPy pads the header so that the first axis can grow in place
_ALIGN = 64


def npy_bytes(t: Tensor) -> bytes:
    """``t`` as a .npy file, the bytes ``numpy.lib.format.write_array`` writes for it."""
    code = _TYPES[t.dtype][1]
    descr = ("|" if code[1] == "1" else _NATIVE) + code
    shape = "(" + ", ".join(str(d) for d in t.shape) + ("," if len(t.shape) == 1 else "") + ")"
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    if t.shape:
        header += " " * (_GROWTH_AXIS_MAX_DIGITS - len(str(t.shape[0])))
    pad = _ALIGN - ((len(NPY_MAGIC) + 2 + 2 + len(header) + 1) % _ALIGN)
    text = (header + " " * pad + "\n").encode("latin1")
    return NPY_MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text + t.data


class NpyError(ValueError):
    """Not a .npy file this runtime reads (the message says why)."""


def read_npy(data: bytes) -> Tensor:
    """A .npy file's array: versions 1-3, any byte order, C or Fortran order, the dtypes above."""
    if not data.startswith(NPY_MAGIC) or len(data) < 10:
        raise NpyError("the file does not start with the .npy magic string")
    major = data[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", data[8:10]), 10
    elif major in (2, 3):
        (hlen,), start = struct.unpack("<I", data[8:12]), 12
    else:
        raise NpyError(f"unsupported .npy format version {major}.{data[7]}")
    try:
        header = _literal(data[start : start + hlen].decode("utf8" if major == 3 else "latin1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    except (KeyError, TypeError, ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise NpyError(f"cannot parse the .npy header: {exc}") from None
    if not isinstance(descr, str) or len(descr) != 3 or descr[1:] not in _BY_CODE:
        raise NpyError(f"unsupported dtype {descr!r} (numbers only)")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise NpyError(f"bad shape {shape!r}")
    dtype = _BY_CODE[descr[1:]]
    count = math.prod(shape)
    width = int(descr[2])
    body = data[start + hlen :]
    if len(body) < count * width:
        raise NpyError(f"{len(body)} bytes of data for {count} elements of {dtype}")
    body = body[: count * width]
    if descr[0] not in ("|", "=", _NATIVE) and width > 1:
        body = _swapped(body, width)
    if fortran and len(shape) > 1:
        body = _c_order(body, shape, width)
    return Tensor(dtype, tuple(shape), body)


def _literal(text: str) -> dict[str, object]:
    """The header's dict. NumPy writes one form (``{'descr': '<f4', 'fortran_order': False, 'shape':
    (1, 10), }`` padded with spaces), read here without ``ast`` (3 ms and ~0.8 MB at every
    ``--self-test``); anything else is left to ``ast.literal_eval``."""
    import re  # imported by the runtime's CLI already

    plain = re.fullmatch(
        r"\{'descr': '([<>|=][a-z]\d)', 'fortran_order': (True|False), "
        r"'shape': \(((?:\d+, )*(?:\d+,?)?)\), \} *\n?",
        text,
    )
    if plain:
        descr, fortran, dims = plain.groups()
        shape = tuple(int(d) for d in dims.replace(",", " ").split())
        return {"descr": descr, "fortran_order": fortran == "True", "shape": shape}
    import ast  # another writer's header

    value = ast.literal_eval(text)
    if not isinstance(value, dict):
        raise ValueError("the header is not a dict")
    return value


def _swapped(body: bytes, itemsize: int) -> bytes:
    out = bytearray(len(body))
    for j in range(itemsize):
        out[j::itemsize] = body[itemsize - 1 - j :: itemsize]
    return bytes(out)


def _c_order(body: bytes, shape: tuple[int, ...], itemsize: int) -> bytes:
    """Fortran-ordered elements in C order."""
    n = len(body) // itemsize
    # Fortran strides (in elements) of each axis; walk the indices in C order.
    strides = []
    step = 1
    for d in shape:
        strides.append(step)
        step *= d
    offsets = [0]
    for axis in range(len(shape)):
        stride = strides[axis]
        offsets = [o + i * stride for o in offsets for i in range(shape[axis])]
    assert len(offsets) == n
    return b"".join(body[o * itemsize : (o + 1) * itemsize] for o in offsets)


def read_npz(data: bytes) -> dict[str, Tensor]:
    """An .npz file's arrays by name (members ``NAME.npy``, stored or deflated)."""
    stored = _stored_members(data)
    if stored is not None:
        return {name.removesuffix(".npy"): read_npy(member) for name, member in stored.items()}
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {
                name.removesuffix(".npy"): read_npy(zf.read(name))
                for name in zf.namelist()
                if not name.endswith("/")
            }
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise NpyError(f"not a readable .npz archive: {exc}") from None


_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local header
_CENTRAL = b"PK\x01\x02"


def _stored_members(data: bytes) -> dict[str, bytes] | None:
    """The members of a zip whose every member is stored whole with its sizes in its local header (what
    edgebundle writes: the self-test's reference, --save-outputs), walked from the front without
    zipfile (5 ms of imports at a self-test); None for anything else, which zipfile then reads."""
    members: dict[str, bytes] = {}
    pos = 0
    while data.startswith(b"PK\x03\x04", pos):
        if pos + _LOCAL.size > len(data):
            return None
        _, _, flags, method, _, _, crc, csize, usize, nlen, xlen = _LOCAL.unpack_from(data, pos)
        start = pos + _LOCAL.size + nlen + xlen
        if method != 0 or flags & 0x9 or csize != usize or csize == 0xFFFFFFFF or start + csize > len(data):
            return None  # compressed, encrypted, sizes after the data, zip64: zipfile's job
        body = data[start : start + csize]
        if binascii.crc32(body) != crc:
            raise NpyError("a member of the .npz archive is damaged (CRC mismatch)")
        members[data[pos + _LOCAL.size : pos + _LOCAL.size + nlen].decode("utf-8", "replace")] = body
        pos = start + csize
    return members if members and data.startswith(_CENTRAL, pos) else None


def read_arrays(data: bytes) -> Tensor | dict[str, Tensor]:
    """A .npy file's array or an .npz file's arrays, by their first bytes."""
    if data.startswith(NPY_MAGIC):
        return read_npy(data)
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return read_npz(data)
    raise NpyError("neither a .npy file nor an .npz archive")
