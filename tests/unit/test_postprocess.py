"""The NumPy-free postprocessing (runtime/postprocess.py) against the NumPy expressions it replaced."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgebundle.runtime.postprocess import dequantize, softmax, sum32, summarize, top_k
from tests.unit.arrays import tensor


def spec(dtype: str, scale: float = 0.0, zp: int = 0) -> dict[str, Any]:
    return {"name": "y", "index": 0, "shape": [1, 10], "dtype": dtype, "scale": scale, "zero_point": zp}


@pytest.mark.parametrize("n", [*range(1, 140), 255, 256, 1000, 1001, 8191, 8192, 8193, 10000, 20001])
def test_sum32_is_numpys_float32_sum(n: int) -> None:
    rng = np.random.default_rng(n)
    for scale in (1.0, 1e3, 1e-3):
        arr = (rng.random(n) * scale).astype(np.float32)
        assert sum32(arr.tolist()) == float(arr.sum())


@pytest.mark.parametrize("n", [1, 2, 10, 100, 1000, 1001])
def test_softmax_is_numpys(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    for spread in (1.0, 10.0, 50.0):
        x = (rng.normal(0, spread, n)).astype(np.float32)
        # exp correctly rounded (glibc's expf; NumPy's own SIMD exp, where its build has one, may
        # differ in the last place), the subtraction, sum and division NumPy's float32 ones
        e = np.array([math.exp(v) for v in (x - x.max()).tolist()], dtype=np.float32)
        assert softmax(x.tolist()) == (e / e.sum()).tolist()


@pytest.mark.parametrize(
    ("dtype", "scale", "zp"),
    [("int8", 0.22266696393489838, 42), ("uint8", 1 / 256, 0), ("int8", 0.0, 0), ("float32", 0.0, 0)],
)
def test_dequantize_is_numpys(dtype: str, scale: float, zp: int) -> None:
    rng = np.random.default_rng(9)
    arr = (rng.normal(0, 50, 1000) if dtype == "float32" else rng.integers(-128, 128, 1000)).astype(dtype)
    got_dtype, got = dequantize(tensor(arr), spec(dtype, scale, zp))  # type: ignore[arg-type]
    if dtype == "float32" or not scale:
        want = arr
    else:
        want = (arr.astype(np.float32) - np.float32(zp)) * np.float32(scale)
    assert (got_dtype, got) == (want.dtype.name, want.tolist())


def test_top_k_orders_by_score_then_index_nan_last() -> None:
    scores = [0.1, 0.5, float("nan"), 0.5, 0.9, -1.0]
    got = top_k(scores, 6, ["a", "b", "c", "d", "e"])
    assert [g["index"] for g in got] == [4, 1, 3, 0, 5, 2]
    assert [g.get("label") for g in got] == ["e", "b", "d", "a", None, "c"]
    assert top_k(scores, 2, None) == [{"index": 4, "score": 0.9}, {"index": 1, "score": 0.5}]


def test_summarize_lists_outputs_as_before() -> None:
    arr = np.arange(-5, 5, dtype=np.int8).reshape(1, 10)
    out = summarize([tensor(arr)], [spec("int8", 0.5, 1)], {"dequantize": True}, None)  # type: ignore[list-item]
    want = ((arr.astype(np.float32) - np.float32(1)) * np.float32(0.5)).reshape(-1).tolist()
    assert out == {"outputs": [{"name": "y", "shape": [1, 10], "dtype": "float32", "values": want}]}
    raw = summarize([tensor(arr)], [spec("int8", 0.5, 1)], {"dequantize": False}, None)  # type: ignore[list-item]
    assert raw["outputs"][0]["dtype"] == "int8"
    assert raw["outputs"][0]["values"] == arr.reshape(-1).tolist()
    soft = summarize([tensor(arr)], [spec("int8", 0.5, 1)], {"softmax": True, "top_k": 3}, list("abcdefghij"))  # type: ignore[list-item]
    real = (arr.astype(np.float32) - np.float32(1)) * np.float32(0.5)
    e = np.array([math.exp(v) for v in (real - real.max()).reshape(-1).tolist()], dtype=np.float32)
    p = e / e.sum()
    assert soft == {
        "top_k": [{"index": i, "score": round(float(p[i]), 6), "label": "abcdefghij"[i]} for i in (9, 8, 7)]
    }
