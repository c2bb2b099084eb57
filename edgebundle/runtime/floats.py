"""Float32 outputs read without NumPy, for the detection decoders: an output's real numbers read
lazily (float32 straight from its bytes, 8-bit quantized codes through a 256-entry table of their
values, any other type converted once), the screen that finds the few elements that may pass a
threshold without making Python numbers of the rest, and float32 arithmetic over lists.

A float32 whose top 16 bits (sign, exponent, the mantissa's top 7 bits) say it is below a bound is
skipped in C: ``bytes.translate`` over every fourth byte, rows combined as integers; what passes is
then compared exactly. ``array("f", ...)`` rounds a whole list of doubles to float32 in C, and a
double sum, product or quotient of two float32 values rounded to float32 is exactly float32's own
result, so list arithmetic gives what NumPy's float32 arrays gave.
"""

from __future__ import annotations

import functools
import math
import struct
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .postprocess import pairwise
from .tensors import Tensor, dequantized, f32, f32s

if TYPE_CHECKING:
    from .manifest import TensorSpec


class Real(Protocol):
    """An output's real numbers, flat in C order: ``values[i]`` and ``values[a:b]`` as floats."""

    def __getitem__(self, index: Any) -> Any: ...

    def __len__(self) -> int: ...


class Table8:
    """A quantized 8-bit output read through the float32 value of each of its 256 codes."""

    def __init__(self, data: bytes, signed: bool, scale: float, zero_point: int) -> None:
        self.codes = memoryview(data).cast("b" if signed else "B")
        self.data = data
        self.table = _table8(signed, scale, zero_point)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.table[c] for c in self.codes[index]]
        return self.table[self.codes[index]]

    def __len__(self) -> int:
        return len(self.codes)


@functools.lru_cache(maxsize=32)
def _table8(signed: bool, scale: float, zero_point: int) -> list[float]:
    """The value of each code, indexed by code: a signed code c is at c (negative indices wrap to the
    upper half). Read-only: shared by every frame of an output."""
    if signed:
        values = dequantized(range(-128, 128), scale, zero_point)
        return values[128:] + values[:128]
    return dequantized(range(256), scale, zero_point)


def real(value: Tensor, info: TensorSpec) -> Real:
    """An output as real float32 numbers: (x - zero_point) * scale when quantized."""
    if info["scale"] and value.dtype in ("int8", "uint8"):
        return Table8(value.data, value.dtype == "int8", info["scale"], info["zero_point"])
    if value.dtype == "float32":
        return memoryview(value.data).cast("f")
    values = value.values()
    if info["scale"] and not value.is_float:
        return dequantized(values, info["scale"], info["zero_point"])
    return f32s([float(v) for v in values])


_BITS = struct.Struct("=I")
_FLOAT = struct.Struct("=f")
_TOP = 3 if sys.byteorder == "little" else 0  # the byte of the sign and the exponent's high bits
_NEXT = 2 if sys.byteorder == "little" else 1  # the exponent's low bit and the mantissa's top 7


def _prefix_passes(prefix: int, bound: float) -> bool:
    """Whether a float32 whose top 16 bits are ``prefix`` can be >= ``bound`` (NaN: yes)."""
    bits = (prefix << 16) | 0xFFFF if prefix < 0x8000 else prefix << 16  # its greatest value
    greatest: float = _FLOAT.unpack(_BITS.pack(bits))[0]
    return math.isnan(greatest) or greatest >= bound


def _first(lo: int, hi: int, passes: Callable[[int], bool]) -> int:
    """The first of lo..hi where ``passes`` turns true (it stays true after), or hi + 1."""
    while lo <= hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid - 1
        else:
            lo = mid + 1
    return lo


class _Edge(NamedTuple):
    """A top byte whose floats pass or not by the next byte (at least some value for positive floats,
    at most for negative ones): translate tables of that top byte and of the next bytes that pass."""

    top: int
    top_table: bytes
    second_table: bytes


@functools.lru_cache(maxsize=32)
def _screen_tables(bound: float) -> tuple[bytes, tuple[_Edge, ...]]:
    """The translate table of the top bytes that pass whatever the next byte (``sure``), and the
    edges, for ``_screen32``. The test is monotone in the 16-bit prefix: over positive floats it
    passes from some prefix up, over negative ones (of magnitude under 2**127; the top byte 0xff
    always passes) from -0.0 down to some prefix."""
    sure = bytearray(256)
    sure[0xFF] = 1
    start = _first(0, 0x7FFF, lambda p: _prefix_passes(p, bound))  # 0x7fff is NaN: always found
    top, second = divmod(start, 256)
    sure[top + 1 : 0x80] = b"\x01" * (0x7F - top)
    edges = [_edge(top, second, upward=True)]
    end = _first(0x8000, 0xFEFF, lambda p: not _prefix_passes(p, bound)) - 1  # the last that passes
    if end >= 0x8000:
        top, second = divmod(end, 256)
        sure[0x80:top] = b"\x01" * (top - 0x80)
        edges.append(_edge(top, second, upward=False))
    return bytes(sure), tuple(edges)


def _edge(top: int, second: int, upward: bool) -> _Edge:
    tops = bytes(1 if t == top else 0 for t in range(256))
    seconds = bytes(1 if (s >= second if upward else s <= second) else 0 for s in range(256))
    return _Edge(top, tops, seconds)


def _tops(values: memoryview, start: int, step: int, count: int, byte: int) -> bytes:
    """Byte ``byte`` of the float32 elements ``start + k * step`` (k < count)."""
    data = values.obj
    assert isinstance(data, bytes)
    return data[4 * start + byte : 4 * (start + (count - 1) * step) + 4 : 4 * step]


def _screen32(values: memoryview, start: int, step: int, count: int, bound: float) -> bytes:
    tops = _tops(values, start, step, count, _TOP)
    sure, edges = _screen_tables(bound)
    flags = tops.translate(sure)
    for edge in edges:
        on_edge = tops.count(edge.top)
        if not on_edge:
            continue
        if on_edge <= count // 64:  # a few: their next byte looked up one by one
            data, out = values.obj, bytearray(flags)
            assert isinstance(data, bytes)
            first = 4 * start + _NEXT
            k = tops.find(edge.top)
            while k >= 0:
                if edge.second_table[data[first + 4 * k * step]]:
                    out[k] = 1
                k = tops.find(edge.top, k + 1)
            flags = bytes(out)
        else:  # many: every element's next byte, the rows as integers
            seconds = _tops(values, start, step, count, _NEXT)
            bits = int.from_bytes(flags, "big") | (
                int.from_bytes(tops.translate(edge.top_table), "big")
                & int.from_bytes(seconds.translate(edge.second_table), "big")
            )
            flags = bits.to_bytes(count, "big")
    return flags


def screen(values: Real, start: int, step: int, count: int, bound: float) -> bytes:
    """A byte per element ``start + k * step`` (k < count): 1 where it may be >= ``bound`` (never 0
    where it is; NaN passes). Float32 values are screened by their top 16 bits (within 1/128 of the
    bound), 8-bit ones exactly."""
    if isinstance(values, memoryview):  # float32
        return _screen32(values, start, step, count, bound)
    if isinstance(values, Table8):
        table = bytes(1 if not v < bound else 0 for v in values.table)
        return values.data[start : start + (count - 1) * step + 1 : step].translate(table)
    return bytes(1 if not values[start + k * step] < bound else 0 for k in range(count))


def any_row(flags: bytes, rows: int, n: int) -> bytes:
    """Per column of ``flags`` read as ``rows`` x ``n``: 1 where any row has a 1."""
    bits = 0
    for r in range(rows):
        bits |= int.from_bytes(flags[r * n : (r + 1) * n], "big")
    return bits.to_bytes(n, "big")


def positions(flags: bytes) -> list[int]:
    """The k whose byte is set in ``flags``, in order."""
    out = []
    k = flags.find(1)
    while k >= 0:
        out.append(k)
        k = flags.find(1, k + 1)
    return out


_LARGE = bytes(1 if top & 0x7F >= 0x40 else 0 for top in range(256))  # float32 top bytes of |x| >= 2


def maybe_large(values: Real, start: int, step: int, count: int) -> list[int]:
    """The elements ``start + k * step`` (k < count) that may be 2.0 or more in magnitude, or NaN:
    every one that is, and for float32 few others (the top byte says [2, 8) or more)."""
    if isinstance(values, memoryview):
        far = _tops(values, start, step, count, _TOP).translate(_LARGE)
    elif isinstance(values, Table8):
        table = bytes(0 if -2.0 <= v <= 2.0 else 1 for v in values.table)
        far = values.data[start : start + (count - 1) * step + 1 : step].translate(table)
    else:
        return list(range(start, start + count * step, step))
    return [start + k * step for k in positions(far)]


def argmax(scores: Sequence[float]) -> int:
    """NumPy's argmax: the first NaN, else the first of equal maxima."""
    if len(scores) == 1:
        return 0
    values = list(scores)
    nan = [math.isnan(v) for v in values]
    return nan.index(True) if any(nan) else values.index(max(values))


# Float32 arithmetic over lists, element by element (array("f") rounds a whole list in C).
def mul(a: list[float], b: list[float]) -> list[float]:
    return f32s([x * y for x, y in zip(a, b, strict=True)])


def add(a: list[float], b: list[float]) -> list[float]:
    return f32s([x + y for x, y in zip(a, b, strict=True)])


def sub(a: list[float], b: list[float]) -> list[float]:
    return f32s([x - y for x, y in zip(a, b, strict=True)])


def scaled(a: list[float], divisor: float) -> list[float]:
    return f32s([x / divisor for x in a])


def div(a: float, b: float) -> float:
    """a / b in float32, IEEE's way for b = 0 (weights of score 0): inf with a's sign, or NaN."""
    if b:
        return f32(a / b)
    return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)


def sums(rows: list[list[float]]) -> list[float]:
    """Per column, the float32 sum NumPy's ``add.reduceat`` gives: the first row plus the pairwise sum
    of the rest (MediaPipe sums in turn: the two can differ in the last place)."""
    return rows[0] if len(rows) == 1 else add(rows[0], pairwise_rows(rows[1:]))


def pairwise_rows(rows: list[list[float]]) -> list[float]:
    """NumPy's pairwise summation of every column at once."""
    return pairwise(rows, add, [0.0] * len(rows[0]))
