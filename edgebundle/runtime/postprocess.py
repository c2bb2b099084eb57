"""Raw output tensors -> the JSON result the binary prints (top-k with labels, or every output), in
float32 arithmetic as the model's own outputs, without NumPy: ``array("f", ...)`` rounds a list of
doubles to float32 in C, and a double sum, product or quotient of two float32 values rounded to
float32 is exactly float32's own result."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .tensors import Tensor, dequantized, f32, f32s

if TYPE_CHECKING:
    from .manifest import TensorSpec

T = TypeVar("T")


def dequantize(t: Tensor, tensor: TensorSpec) -> tuple[str, list[float] | list[int]]:
    """The values as real numbers: (x - zero_point) * scale in float32 for a quantized tensor, else
    as they are; with the dtype they then have."""
    values = t.values()
    if t.is_float or not tensor["scale"]:
        return t.dtype, values
    return "float32", dequantized(values, tensor["scale"], tensor["zero_point"])


def softmax(x: list[float]) -> list[float]:
    """exp(x - max) / sum in float32, as NumPy computes it: exp correctly rounded (glibc's expf),
    the sum NumPy's own way (sum32)."""
    if not x:
        return []
    x = f32s(x)
    top = max(x)
    e = f32s([math.exp(v) for v in f32s([v - top for v in x])])
    total = sum32(e)
    return f32s([v / total for v in e])


def sum32(values: list[float]) -> float:
    """The float32 sum NumPy's ``sum`` gives: blocks of 8192 (its buffer), each summed pairwise
    (halves down to 128 elements, then 8 running sums combined as a tree, then the rest in turn);
    a different order rounds differently in the last place, which a 6-decimal score can show."""
    total = 0.0
    for start in range(0, len(values), 8192):
        total = f32(total + _pairwise(values[start : start + 8192]))
    return total


def _plus(a: float, b: float) -> float:
    return f32(a + b)


def _lanes(r: list[float], a: Sequence[float]) -> list[float]:
    return f32s([x + y for x, y in zip(r, a, strict=True)])


def _pairwise(a: list[float]) -> float:
    return pairwise(a, _plus, 0.0, _lanes)


def pairwise(
    a: Sequence[T],
    plus: Callable[[T, T], T],
    zero: T,
    lanes: Callable[[list[T], Sequence[T]], list[T]] | None = None,
) -> T:
    """NumPy's pairwise summation of ``a`` with ``plus``: under 8 items in turn from ``zero``; over
    128, the two halves (cut at a multiple of 8); else 8 running sums (``lanes`` adds the next 8
    items to them at once, if given) combined as a tree, then the rest in turn. Items are float32
    numbers here, rows of them in floats.pairwise_rows."""
    n = len(a)
    if n < 8:
        total = zero
        for v in a:
            total = plus(total, v)
        return total
    if n > 128:
        half = n // 2
        half -= half % 8
        return plus(pairwise(a[:half], plus, zero, lanes), pairwise(a[half:], plus, zero, lanes))
    r = list(a[:8])
    i = 8
    while i < n - n % 8:
        chunk = a[i : i + 8]
        r = lanes(r, chunk) if lanes else [plus(x, y) for x, y in zip(r, chunk, strict=True)]
        i += 8
    total = plus(plus(plus(r[0], r[1]), plus(r[2], r[3])), plus(plus(r[4], r[5]), plus(r[6], r[7])))
    for v in a[i:]:
        total = plus(total, v)
    return total


def target_output(outputs: list[TensorSpec], name: str | None) -> int:
    """Index of the output that softmax/top-k apply to: the named one, else the first."""
    if name is None:
        return 0
    for i, info in enumerate(outputs):
        if info["name"] == name:
            return i
    raise ValueError(f"model has no output named {name!r}")


def summarize(
    values: list[Tensor],
    outputs: list[TensorSpec],
    spec: dict[str, Any],
    labels: list[str] | None,
) -> dict[str, Any]:
    """The JSON-able result for one inference."""
    chosen = target_output(outputs, spec.get("tensor"))
    result: dict[str, Any] = {}
    listed = []
    for i, (t, info) in enumerate(zip(values, outputs, strict=True)):
        real_numbers = spec.get("dequantize", True)
        dtype, real = dequantize(t, info) if real_numbers else (t.dtype, t.values())
        if i == chosen and spec.get("softmax"):
            real, dtype = softmax([float(v) for v in real]), "float32"
        if i == chosen and spec.get("top_k"):
            result["top_k"] = top_k(real, int(spec["top_k"]), labels)
            continue
        # With dequantize = false the stored type is reported, softmax or not (as always).
        listed.append(
            {
                "name": info["name"],
                "shape": list(t.shape),
                "dtype": dtype if real_numbers else t.dtype,
                "values": real,
            }
        )
    if listed:
        result["outputs"] = listed
    return result


def top_k(scores: list[float] | list[int], k: int, labels: list[str] | None) -> list[dict[str, Any]]:
    """The k highest scores, highest first, lower index first among equal scores, NaN last."""
    out = []
    for index in by_score(scores)[:k]:
        item: dict[str, Any] = {"index": index, "score": round(float(scores[index]), 6)}
        if labels is not None and index < len(labels):
            item["label"] = labels[index]
        out.append(item)
    return out


def by_score(scores: Sequence[float]) -> list[int]:
    """Indices by descending score, stable, NaN last (NumPy's ``argsort(-scores, kind="stable")``)."""
    return sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), -scores[i]))
