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
