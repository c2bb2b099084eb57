"""The device report as data: percentiles, the budget check, JSON keys, the table and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from edgebundle.device.budgets import MB, check_budgets
from edgebundle.device.junit import junit_xml
from edgebundle.device.report import (
    EMULATED_NOTE,
    DeviceReport,
    LatencyMs,
    Samples,
    StartupMs,
    percentile,
)
from edgebundle.target import Budgets

BUDGETS = Budgets(max_size_mb=40, max_startup_ms=2000, max_rss_mb=100)


def report(
    *, budgets: Budgets = BUDGETS, emulated: bool = False, rss: int = 50 * MB, guest: int | None = None
) -> DeviceReport:
    size = 30_802_368
    return DeviceReport(
        binary="dist/digits",
        device="qemu" if emulated else "local",
        arch="x86_64",
        emulated=emulated,
        target="x86_64",
        runs=3,
        size_bytes=size,
        startup_ms=StartupMs(cold=790.0, warm_p50=774.0, warm_p90=790.0),
        peak_rss_bytes=rss,
        largest_process_rss_bytes=48 * MB,
        processes=2,
        guest_peak_rss_bytes=guest,
        latency_ms=LatencyMs(p50=0.023, p90=0.044),
        budgets=check_budgets(
            budgets, size_bytes=size, startup_warm_p50_ms=774.0, peak_rss_bytes=rss, emulated=emulated
        ),
        samples=Samples(
            startup_warm_ms=(774.0, 760.0, 790.0),
            peak_rss_bytes=(rss, rss, rss),
            latency_ms=(0.02, 0.023, 0.044),
            latency_warmup_ms=0.15,
        ),
        notes=(EMULATED_NOTE,) if emulated else (),
    )


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 90, 5.0),
        ([3.0, 1.0, 2.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([*range(1, 11)], 90, 9.1),
    ],
)
def test_percentile_interpolates_like_numpy(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_every_set_budget_is_checked_in_order() -> None:
    results = check_budgets(
        BUDGETS, size_bytes=41 * MB, startup_warm_p50_ms=1999.0, peak_rss_bytes=100 * MB, emulated=False
    )
    assert [(r.name, r.limit, r.value, r.passed) for r in results] == [
        ("max_size_mb", 40, 41.0, False),
        ("max_startup_ms", 2000, 1999.0, True),
        ("max_rss_mb", 100, 100.0, True),
    ]


def test_a_budget_compares_the_exact_figure_not_the_rounded_one() -> None:
    (size,) = check_budgets(
        Budgets(max_size_mb=40),
        size_bytes=40 * MB + 1,
        startup_warm_p50_ms=0,
        peak_rss_bytes=0,
        emulated=False,
    )
    assert size.value == 40.0
    assert size.passed is False


def test_unset_budgets_are_left_out() -> None:
    assert (
        check_budgets(Budgets(), size_bytes=1, startup_warm_p50_ms=1, peak_rss_bytes=1, emulated=False) == ()
    )


def test_under_emulation_only_the_size_is_enforced() -> None:
    r = report(emulated=True, rss=500 * MB)
    assert {b.name: b.passed for b in r.budgets} == {
        "max_size_mb": True,
        "max_startup_ms": None,
        "max_rss_mb": None,
    }
    assert r.ok
    assert "not enforced" in r.budgets[2].describe()


def test_json_has_the_keys_ci_reads() -> None:
    data = json.loads(json.dumps(report().to_json()))
    assert data["size_bytes"] == 30_802_368
    assert data["startup_ms"] == {"cold": 790.0, "warm_p50": 774.0, "warm_p90": 790.0}
    assert data["peak_rss_bytes"] == 50 * MB
    assert data["latency_ms"] == {"p50": 0.023, "p90": 0.044}
    assert (data["device"], data["arch"], data["emulated"], data["ok"]) == ("local", "x86_64", False, True)
    assert data["budgets"]["max_rss_mb"] == {"limit": 100, "value": 50.0, "unit": "MB", "pass": True}
    assert set(data["budgets"]) == {"max_size_mb", "max_startup_ms", "max_rss_mb"}


def test_a_failed_budget_makes_the_report_not_ok() -> None:
    r = report(rss=150 * MB)
    assert not r.ok
    assert [b.name for b in r.failed()] == ["max_rss_mb"]
    assert r.failed()[0].describe() == "max_rss_mb: 150 MB > 100 MB"
    assert r.to_json()["ok"] is False


def test_table_shows_every_figure_and_verdict() -> None:
    text = report(rss=150 * MB).table()
    assert text.splitlines()[0] == "dist/digits on local (x86_64, native), 3 runs, target x86_64"
    assert "30.8 MB (30802368 bytes)" in text
    assert "p50 774 ms, p90 790 ms" in text
    assert "150.0 MB (2 processes, largest 48.0 MB)" in text
    assert "FAIL" in text
    assert text.splitlines()[-1] == "FAILED: max_rss_mb: 150 MB > 100 MB"


def test_emulated_table_says_timings_are_not_representative() -> None:
    text = report(emulated=True).table()
    assert "emulated" in text.splitlines()[0]
    assert f"note: {EMULATED_NOTE}" in text
    assert "not enforced" in text


def test_an_emulated_run_shows_its_estimate_without_qemu() -> None:
    emulated = report(emulated=True, rss=78_600_000, guest=37_220_000)
    assert emulated.to_json()["rss"]["guest_estimate_bytes"] == 37_220_000
    assert "    without QEMU ~37.2 MB (estimate)" in emulated.table().splitlines()
    props = ET.fromstring(junit_xml(emulated)).iter("property")
    assert {p.get("name"): p.get("value") for p in props}["rss.guest_estimate_bytes"] == "37220000"
    native = report()
    assert "guest_estimate_bytes" not in native.to_json()["rss"]
    assert "without QEMU" not in native.table()


def test_junit_has_one_testcase_per_budget() -> None:
    suite = ET.fromstring(junit_xml(report(rss=150 * MB))).find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["max_size_mb", "max_startup_ms", "max_rss_mb"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "0")
    failure = cases["max_rss_mb"].find("failure")
    assert failure is not None
    assert failure.get("message") == "max_rss_mb: 150 MB > 100 MB"
    assert cases["max_size_mb"].find("failure") is None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["peak_rss_bytes"] == str(150 * MB)
    out = suite.find("system-out")
    assert out is not None
    assert json.loads(out.text or "")["ok"] is False


def test_junit_marks_emulated_timing_budgets_skipped() -> None:
    suite = ET.fromstring(junit_xml(report(emulated=True))).find("testsuite")
    assert suite is not None
    assert suite.get("skipped") == "2"
    skipped = [c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert skipped == ["max_startup_ms", "max_rss_mb"]


def test_the_in_process_benchmark_as_benchmark_model_reports_it() -> None:
    """APP --eb-bench's events (runtime/measure.py bench) -> the report's benchmark block, table rows
    and JUnit properties."""
    import dataclasses
    import xml.etree.ElementTree as ET

    from edgebundle.device.junit import junit_xml
    from edgebundle.device.report import Benchmark
    from edgebundle.runtime.measure import WARMUP_RUNS, bench

    events: list[dict[str, object]] = []
    timings = iter([5.0, 1.5, 0.5, *[float(i) for i in range(1, 21)]])
    assert (
        bench(
            lambda: next(timings),
            20,
            events.append,
            startup={"runtime": 31.0, "imports": 40.0, "model_load": 2.5},
        )
        == 0
    )
    kinds = [e["event"] for e in events]
    assert kinds == ["init", *["warmup"] * WARMUP_RUNS, *["inference"] * 20, "summary"]
    assert isinstance(events[0]["rss_bytes"], int)
    assert isinstance(events[-1]["peak_rss_bytes"], int)
    init, summary = events[0], events[-1]
    warmups = [float(e["ms"]) for e in events if e["event"] == "warmup"]  # type: ignore[arg-type]
    latencies = [float(e["ms"]) for e in events if e["event"] == "inference"]  # type: ignore[arg-type]
    got = Benchmark.from_events(init, warmups, latencies, summary)  # type: ignore[arg-type]
    assert got.startup_ms == {"runtime": 31.0, "imports": 40.0, "model_load": 2.5, "first_inference": 5.0}
    assert got.warmup_avg_ms == 1.0  # the first inference is apart
    assert got.inference_ms == {"avg": 10.5, "p5": 1.95, "p50": 10.5, "p95": 19.05}
    assert got.rss_peak_bytes is not None
    assert got.rss_init_bytes is not None
    assert got.rss_peak_bytes >= got.rss_init_bytes

    with_bench = dataclasses.replace(report(), benchmark=got)
    data = with_bench.to_json()["benchmark"]
    assert data["first_inference_ms"] == 5.0
    assert data["inference_ms"]["p95"] == 19.05
    assert report().to_json()["benchmark"] is None
    table = with_bench.table()
    assert "start-up split ms: runtime 31.0, imports 40.0, model load 2.5, first inference 5.0" in table
    assert "avg 10.500, p5 1.950, median 10.500, p95 19.050 ms; warm-up avg 1.000 ms" in table
    props = {
        p.get("name"): p.get("value")
        for p in ET.fromstring(junit_xml(with_bench).split("\n", 1)[1]).iter("property")
    }
    assert props["benchmark.startup_ms.model_load"] == "2.5"
    assert props["benchmark.inference_ms.avg"] == "10.5"
