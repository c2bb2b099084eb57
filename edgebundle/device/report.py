"""What a device test found, as data: frozen dataclasses, serialised to JSON with the keys CI and our
tools read (size_bytes, startup_ms, peak_rss_bytes, latency_ms, device, arch, emulated, ok, budgets),
and rendered as a table for people."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..target import Arch
from .budgets import MB, BudgetResult

EMULATED_NOTE = "emulated by QEMU: timings and memory include the emulator and are not representative"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (NumPy's default), so p50 is the median."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, kw_only=True)
class StartupMs:
    """Exec to exit of ``--self-test``: the first run after the copy, and ``runs`` later ones."""

    cold: float
    warm_p50: float
    warm_p90: float


@dataclass(frozen=True, kw_only=True)
class LatencyMs:
    """Inference alone, inside one process, after one warm-up."""

    p50: float
    p90: float


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    """One process's own figures (``APP --eb-bench``), as TFLite's benchmark_model users know them:
    the start-up split (``runtime``: launcher, bootloader and Python up to the runtime's first line;
    ``imports``; ``model_load``, benchmark_model's "init"; ``first_inference``), the warm-up average
    (after the first), steady-state inference and the process's memory once the model is loaded and
    at its peak."""

    startup_ms: dict[str, float | None]
    warmup_avg_ms: float
    inference_ms: dict[str, float]  # avg, p5, p50, p95
    rss_init_bytes: int | None
    rss_peak_bytes: int | None

    @classmethod
    def from_events(
        cls, init: dict[str, Any], warmups: list[float], latencies: list[float], summary: dict[str, Any]
    ) -> Benchmark:
        split = {k: v for k, v in init.get("startup_ms", {}).items() if k in STARTUP_PHASES}
        split["first_inference"] = warmups[0]
        later = warmups[1:] or warmups
        return cls(
            startup_ms={phase: split.get(phase) for phase in (*STARTUP_PHASES, "first_inference")},
            warmup_avg_ms=round(sum(later) / len(later), 4),
            inference_ms={
                "avg": round(sum(latencies) / len(latencies), 4),
                "p5": round(percentile(latencies, 5), 4),
                "p50": round(percentile(latencies, 50), 4),
                "p95": round(percentile(latencies, 95), 4),
            },
            rss_init_bytes=init.get("rss_bytes"),
            rss_peak_bytes=summary.get("peak_rss_bytes"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "startup_ms": self.startup_ms,
            "first_inference_ms": self.startup_ms["first_inference"],
            "warmup_avg_ms": self.warmup_avg_ms,
            "inference_ms": self.inference_ms,
            "rss_init_bytes": self.rss_init_bytes,
            "rss_peak_bytes": self.rss_peak_bytes,
        }

    def properties(self) -> list[tuple[str, str]]:
        """Flat name/value pairs (JUnit properties)."""
        pairs = [(f"benchmark.startup_ms.{k}", v) for k, v in self.startup_ms.items()]
        pairs += [("benchmark.warmup_avg_ms", self.warmup_avg_ms)]
        pairs += [(f"benchmark.inference_ms.{k}", v) for k, v in self.inference_ms.items()]
        pairs += [
            ("benchmark.rss_init_bytes", self.rss_init_bytes),
            ("benchmark.rss_peak_bytes", self.rss_peak_bytes),
        ]
        return [(name, "" if value is None else str(value)) for name, value in pairs]

    def rows(self) -> list[tuple[str, str]]:
        split = ", ".join(
            f"{phase.replace('_', ' ')} {ms:.1f}" for phase, ms in self.startup_ms.items() if ms is not None
        )
        inf = self.inference_ms
        rss = [
            f"{label} {_mb(value)}"
            for label, value in (("at init", self.rss_init_bytes), ("peak", self.rss_peak_bytes))
            if value is not None
        ]
        return [
            ("  in process", f"start-up split ms: {split}"),
            (
                "  inference",
                f"avg {inf['avg']:.3f}, p5 {inf['p5']:.3f}, median {inf['p50']:.3f}, "
                f"p95 {inf['p95']:.3f} ms; warm-up avg {self.warmup_avg_ms:.3f} ms",
            ),
            *([("  memory", ", ".join(rss) + " (the measuring process)")] if rss else []),
        ]


STARTUP_PHASES = ("runtime", "imports", "model_load")


@dataclass(frozen=True, kw_only=True)
class Samples:
    """The raw figures behind the summaries, for whoever wants to look closer."""

    startup_warm_ms: tuple[float, ...]
    peak_rss_bytes: tuple[int, ...]
    latency_ms: tuple[float, ...]
    latency_warmup_ms: float


@dataclass(frozen=True, kw_only=True)
class DeviceReport:
    binary: str
    device: str
    arch: Arch
    emulated: bool
    target: str
    runs: int
    size_bytes: int
    startup_ms: StartupMs
    peak_rss_bytes: int
    largest_process_rss_bytes: int
    processes: int
    # Emulated runs: the peak without QEMU's own memory, an estimate (runtime/measure.py).
    guest_peak_rss_bytes: int | None = None
    latency_ms: LatencyMs
    budgets: tuple[BudgetResult, ...]
    samples: Samples
    notes: tuple[str, ...] = ()
    benchmark: Benchmark | None = None  # None from a binary older than the in-process figures

    @property
    def ok(self) -> bool:
        """Every enforced budget passed (the runs themselves all passed, or there is no report)."""
        return all(b.passed is not False for b in self.budgets)

    def failed(self) -> tuple[BudgetResult, ...]:
        return tuple(b for b in self.budgets if b.passed is False)

    def to_json(self) -> dict[str, Any]:
        return {
            "binary": self.binary,
            "device": self.device,
            "arch": self.arch,
            "emulated": self.emulated,
            "ok": self.ok,
            "target": self.target,
            "runs": self.runs,
            "size_bytes": self.size_bytes,
            "startup_ms": {
                "cold": self.startup_ms.cold,
                "warm_p50": self.startup_ms.warm_p50,
                "warm_p90": self.startup_ms.warm_p90,
            },
            "peak_rss_bytes": self.peak_rss_bytes,
            "rss": {"largest_process_bytes": self.largest_process_rss_bytes, "processes": self.processes}
            | (
                {"guest_estimate_bytes": self.guest_peak_rss_bytes}
                if self.guest_peak_rss_bytes is not None
                else {}
            ),
            "latency_ms": {"p50": self.latency_ms.p50, "p90": self.latency_ms.p90},
            "benchmark": self.benchmark.to_json() if self.benchmark else None,
            "budgets": {
                b.name: {"limit": b.limit, "value": b.value, "unit": b.unit, "pass": b.passed}
                | ({"note": b.note} if b.note else {})
                for b in self.budgets
            },
            "notes": list(self.notes),
            "samples": {
                "startup_warm_ms": list(self.samples.startup_warm_ms),
                "peak_rss_bytes": list(self.samples.peak_rss_bytes),
                "latency_ms": list(self.samples.latency_ms),
                "latency_warmup_ms": self.samples.latency_warmup_ms,
            },
        }

    def table(self) -> str:
        """A readable summary: one row per figure, with its budget and verdict where there is one."""
        by_name = {b.name: b for b in self.budgets}
        s, lat = self.startup_ms, self.latency_ms
        rows = [
            ("size", f"{_mb(self.size_bytes)} ({self.size_bytes} bytes)", by_name.get("max_size_mb")),
            ("startup, cold", f"{s.cold:.0f} ms (first run after the copy)", None),
            (
                "startup, warm",
                f"p50 {s.warm_p50:.0f} ms, p90 {s.warm_p90:.0f} ms",
                by_name.get("max_startup_ms"),
            ),
            (
                "peak RSS",
                f"{_mb(self.peak_rss_bytes)} ({_plural(self.processes, 'process', 'processes')}, "
                f"largest {_mb(self.largest_process_rss_bytes)})",
                by_name.get("max_rss_mb"),
            ),
            *(
                [("  without QEMU", f"~{_mb(self.guest_peak_rss_bytes)} (estimate)", None)]
                if self.guest_peak_rss_bytes is not None
                else []
            ),
            ("latency", f"p50 {lat.p50:.3f} ms, p90 {lat.p90:.3f} ms", None),
        ]
        width = max(len(value) for _, value, _ in rows)
        limits = {label: f"budget {b.limit:g} {b.unit}" if b else "" for label, _, b in rows}
        limit_width = max(len(text) for text in limits.values())
        kind = "emulated" if self.emulated else "native"
        lines = [
            f"{self.binary} on {self.device} ({self.arch}, {kind}), {self.runs} runs, target {self.target}"
        ]
        for label, value, budget in rows:
            verdict = ""
            if budget is not None:
                verdict = {True: "pass", False: "FAIL", None: "not enforced"}[budget.passed]
            lines.append(f"  {label:14} {value:{width}}  {limits[label]:{limit_width}}  {verdict}".rstrip())
        lines.extend(
            f"  {label:14} {value}" for label, value in (self.benchmark.rows() if self.benchmark else [])
        )
        lines.extend(f"  note: {note}" for note in self.notes)
        failed = self.failed()
        enforced = [b for b in self.budgets if b.passed is not None]
        if failed:
            lines.append(f"FAILED: {'; '.join(b.describe() for b in failed)}")
        else:
            lines.append(f"ok: {len(enforced)} of {len(enforced)} enforced budgets pass")
        return "\n".join(lines)


def _mb(size: int) -> str:
    """Megabytes (10^6 bytes, as the budgets count them) with a useful number of digits."""
    return f"{size / MB:.1f} MB" if size >= MB // 10 else f"{size / MB:.4f} MB"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"
