"""runtime/floats.py: the screen never misses an element that passes (and lets few others through),
for float32 outputs read from their bytes and 8-bit ones through their table; and the helpers that
stand in for NumPy (argmax, the stable descending order, float32 division, NumPy's pairwise sums)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgebundle.runtime import floats
from edgebundle.runtime.floats import argmax, div, maybe_large, positions, screen, sums
from edgebundle.runtime.postprocess import by_score
from tests.unit.arrays import view

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38, 1e-40, -1e-40, 2.0, -2.0, 0.25]


def values(n: int, seed: int, spread: float = 3.0) -> Any:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, spread, n), rng.normal(0, 1e-6, n // 10), SPECIAL]).astype(
        np.float32
    )


@pytest.mark.parametrize(
    "bound",
    [0.25, -0.3, 0.0, -0.0, 1e-7, -2.4e-7, 5.0, -5.0, 1e30, -1e30, math.inf, -math.inf, 1e-42, -1e-42],
)
@pytest.mark.parametrize(("start", "step"), [(0, 1), (3, 7)])
def test_the_float32_screen_keeps_every_element_that_passes(bound: float, start: int, step: int) -> None:
    x = values(20000, 1)
    count = (len(x) - start - 1) // step + 1
    got = set(positions(screen(view(x), start, step, count, float(np.float32(bound)))))
    picked = x[start::step][:count]
    want = set(np.flatnonzero(~(picked < np.float32(bound))).tolist())  # NaN passes
    assert want <= got
    assert len(got - want) <= max(8, len(picked) // 100)  # within 1/128 of the bound


def test_many_and_few_elements_on_the_edge_give_the_same_flags() -> None:
    # 0.25's top byte is 0x3e: elements of that byte are decided by the next byte, one by one when
    # they are few, as integers when they are many
    rng = np.random.default_rng(2)
    many = rng.uniform(0.126, 0.49, 5000).astype(np.float32)  # every one on the edge
    few = np.concatenate([rng.uniform(-1, 0.1, 5000), [0.2, 0.3, 0.26, 0.25, 0.2499]]).astype(np.float32)
    for x in (many, few):
        got = positions(screen(view(x), 0, 1, len(x), 0.25))
        assert got == np.flatnonzero(x >= np.float32(0.25)).tolist()


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_the_8_bit_screen_is_exact(dtype: Any) -> None:
    info = np.iinfo(dtype)
    q = np.arange(info.min, info.max + 1).astype(dtype)
    spec = {"scale": 0.05, "zero_point": 3}
    reals = (q.astype(np.float32) - np.float32(3)) * np.float32(0.05)
    v = view(q, spec)
    assert [v[i] for i in range(len(q))] == reals.tolist()
    for bound in (-1.0, 0.0, 0.7, 100.0):
        got = positions(screen(v, 1, 3, (len(q) - 2) // 3 + 1, float(np.float32(bound))))
        assert got == np.flatnonzero(reals[1::3] >= np.float32(bound)).tolist()


def test_maybe_large_finds_every_value_of_magnitude_two_or_more() -> None:
    x = values(5000, 3, spread=0.5)
    got = set(maybe_large(view(x), 0, 1, len(x)))
    want = set(np.flatnonzero(~(np.abs(x) < 2.0)).tolist())
    assert want <= got


def test_numpys_rules() -> None:
    assert argmax([1.0, 3.0, 3.0, 2.0]) == 1  # the first maximum
    assert argmax([1.0, math.nan, 5.0, math.nan]) == 1  # the first NaN
    assert by_score([0.5, math.nan, 0.9, 0.5]) == [2, 0, 3, 1]  # stable, NaN last
    assert math.isnan(div(0.0, 0.0))
    assert div(1.0, 0.0) == math.inf
    assert div(-1.0, 0.0) == -math.inf
    assert div(1.0, -0.0) == -math.inf


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 17, 100, 129, 300])
def test_sums_are_numpys_reduceat(n: int) -> None:
    rng = np.random.default_rng(n)
    rows = (rng.random((n, 5)) * rng.random((n, 5))).astype(np.float32)
    want = np.add.reduceat(rows, [0])[0]
    assert sums(rows.tolist()) == want.tolist()


def test_the_tables_are_made_once_per_bound() -> None:
    floats._screen_tables.cache_clear()
    x = view(values(100, 4))
    for _ in range(3):
        screen(x, 0, 1, 100, 0.5)
    assert floats._screen_tables.cache_info().misses == 1
