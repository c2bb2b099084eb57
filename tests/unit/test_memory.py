"""The serving modes' decode budget (runtime/memory.py): decodes beyond it wait, and memory is given
back when they are done."""

from __future__ import annotations

import threading
import time

import pytest

from edgebundle.runtime import memory
from edgebundle.runtime.memory import Cancelled, DecodeBudget

MB = 1024 * 1024


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_decodes_beyond_the_budget_wait_for_room() -> None:
    budget = DecodeBudget(10)
    release = threading.Event()
    order: list[str] = []

    def decode(name: str, cost: int) -> None:
        with budget.hold(cost):
            order.append(name)
            release.wait(10)

    first = threading.Thread(target=decode, args=("first", 6 * MB))
    first.start()
    wait_until(lambda: budget.used == 6 * MB)
    small = threading.Thread(target=decode, args=("small", 4 * MB))  # fits beside it
    small.start()
    wait_until(lambda: budget.used == 10 * MB)
    late = threading.Thread(target=decode, args=("late", 1 * MB))
    late.start()
    wait_until(lambda: budget.waiting == 1)
    assert order == ["first", "small"]
    release.set()
    for t in (first, small, late):
        t.join(10)
    assert order == ["first", "small", "late"]
    assert (budget.used, budget.waiting) == (0, 0)


def test_an_image_larger_than_the_budget_runs_alone() -> None:
    budget = DecodeBudget(1)
    with budget.hold(50 * MB):
        assert budget.used == budget.limit
    assert budget.used == 0


def test_a_decode_given_up_while_waiting_does_not_run() -> None:
    budget = DecodeBudget(1)
    gave_up = threading.Event()
    outcome: list[str] = []

    def late() -> None:
        try:
            with budget.hold(MB, gave_up.is_set):
                outcome.append("ran")
        except Cancelled:
            outcome.append("cancelled")

    with budget.hold(MB):
        thread = threading.Thread(target=late)
        thread.start()
        wait_until(lambda: budget.waiting == 1)
        gave_up.set()
    thread.join(10)
    assert outcome == ["cancelled"]
    assert budget.used == 0


def test_memory_is_trimmed_when_the_last_large_decode_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(1))
    budget = DecodeBudget(256)
    with budget.hold(1 * MB):
        pass
    assert trims == []  # small images: not worth walking the arenas
    with budget.hold(40 * MB), budget.hold(40 * MB):
        pass
    assert trims == [1]  # once, when the second one ended and nothing else was decoding


def test_malloc_tuning_is_callable_here() -> None:
    memory.tune_malloc()
    memory.trim()
