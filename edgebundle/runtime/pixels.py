"""Resized 8-bit pixels -> the bytes of an input tensor, without NumPy.

Everything the recipe does after the resize acts on one 8-bit value of one channel at a time: float32,
(x - mean) / std, then quantized with the tensor's scale and zero point (round half to even, clipped)
or cast to its float type. So each channel has a table of 256 tensor elements, computed once with
float32 arithmetic (struct's 4-byte packing rounds a double to the nearest float32, and a double sum
or quotient of float32 values rounded to float32 is exactly float32's own result), and the tensor is
Pillow's ``point`` or a ``bytes.translate`` per byte of an element, interleaved by Pillow's merge:
all of it in C, and bit for bit what the NumPy expression gives.
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any

from PIL import Image

from .tensors import f32, itemsize, struct_format

if TYPE_CHECKING:
    from .manifest import TensorSpec


def _bounds(dtype: str) -> tuple[int, int] | None:
    """The range an integer type clips to; None for a float type."""
    char = struct_format(dtype)
    if char in "efd":
        return None
    if char == "?":
        raise ValueError(f"a {dtype} input cannot take pixels or numbers")
    bits = 8 * itemsize(dtype)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if char.islower() else (0, 2**bits - 1)


def element(real: float, tensor: TensorSpec) -> bytes:
    """One real value as an element of ``tensor``: quantized with its scale and zero point (or
    rounded, when it has none) and clipped for integer types, cast for float types."""
    fmt, bounds = "=" + struct_format(tensor["dtype"]), _bounds(tensor["dtype"])
    if bounds is None:
        try:
            return struct.pack(fmt, real)
        except OverflowError:  # beyond float16's range: NumPy's cast gives infinity
            return struct.pack(fmt, math.copysign(math.inf, real))
    scale = tensor["scale"]
    # np.round(x / scale) + zero_point in float32 (round half to even, as Python's round)
    value = f32(round(f32(real / f32(scale))) + tensor["zero_point"]) if scale else float(round(real))
    return struct.pack(fmt, int(min(max(value, bounds[0]), bounds[1])))


def table(mean: float, std: float, tensor: TensorSpec) -> list[bytes]:
    """The tensor element for each 8-bit value 0..255 of a channel with this mean and std."""
    m, s = f32(mean), f32(std)
    return [element(f32(f32(x - m) / s), tensor) for x in range(256)]


_TABLES: dict[tuple[Any, ...], list[list[bytes]]] = {}


def channel_tables(
    mean: list[float], std: list[float], channels: int, tensor: TensorSpec
) -> list[list[bytes]]:
    """One table per channel (a single mean or std applies to every channel); cached."""
    key = (tuple(mean), tuple(std), channels, tensor["dtype"], tensor["scale"], tensor["zero_point"])
    found = _TABLES.get(key)
    if found is None:
        found = [
            table(mean[k if len(mean) > 1 else 0], std[k if len(std) > 1 else 0], tensor)
            for k in range(channels)
        ]
        _TABLES[key] = found
    return found


def tensor_bytes(
    img: Image.Image, bgr: bool, mean: list[float], std: list[float], tensor: TensorSpec, planar: bool
) -> bytes:
    """The tensor's bytes from a resized 8-bit L or RGB image (``bgr``: its channels reversed):
    interleaved (HWC) or ``planar`` (CHW). Pillow does the per-pixel work: a one-byte type is a
    ``point`` (per-band tables); a wider one is a ``translate`` per byte of an element, whose planes
    an RGBA merge (4 bytes) interleaves."""
    bands = list(img.split())
    if bgr:
        bands.reverse()
    channels = len(bands)
    tables = channel_tables(mean, std, channels, tensor)
    size = len(tables[0][0])
    if size == 1:
        mapped = [band.point([entry[0] for entry in tables[k]]) for k, band in enumerate(bands)]
        if planar or channels == 1:
            return b"".join(band.tobytes() for band in mapped)
        return Image.merge("RGB", mapped).tobytes()
    uniform = all(t == tables[0] for t in tables)
    if not planar and uniform and channels > 1:
        # One table for every channel: map the interleaved pixels (as one wide gray image) at once.
        width, height = img.size
        pixels = Image.merge("RGB", bands) if bgr else img
        return _elements(Image.frombytes("L", (width * channels, height), pixels.tobytes()), tables[0])
    planes = [_elements(band, tables[k]) for k, band in enumerate(bands)]
    if planar or channels == 1:
        return b"".join(planes)
    out = bytearray(len(planes[0]) * channels)
    for k, plane in enumerate(planes):
        for j in range(size):
            out[k * size + j :: channels * size] = plane[j::size]
    return bytes(out)


def _byte_tables(entries: list[bytes]) -> list[bytes]:
    """``bytes.translate`` tables of a channel table: the j-th byte of each entry; cached with the
    table (the same list each time: channel_tables' cache), since making them is most of the work
    for a small image (25 % of a served digits request's CPU)."""
    found = _BYTE_TABLES.get(id(entries))
    if found is None or found[0] is not entries:
        found = (entries, [bytes(entry[j] for entry in entries) for j in range(len(entries[0]))])
        _BYTE_TABLES[id(entries)] = found
    return found[1]


_BYTE_TABLES: dict[int, tuple[list[bytes], list[bytes]]] = {}


def _elements(band: Image.Image, entries: list[bytes]) -> bytes:
    """Each 8-bit pixel of ``band`` as its table entry (``len(entries[0])`` bytes each), in order."""
    size = len(entries[0])
    data = band.tobytes()
    planes = [data.translate(byte_table) for byte_table in _byte_tables(entries)]
    if size == 4:  # an RGBA merge interleaves four byte planes
        return Image.merge("RGBA", [Image.frombytes("L", band.size, plane) for plane in planes]).tobytes()
    out = bytearray(len(data) * size)
    for j, plane in enumerate(planes):
        out[j::size] = plane
    return bytes(out)
