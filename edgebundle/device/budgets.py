"""The budget check: one function from a target's Budgets and the measured figures to a verdict per
budget. MB here are 10^6 bytes, as in the build report.

Under emulation, time and memory budgets are reported but not enforced (``passed`` None): QEMU's
own cost would fail them for reasons that do not exist on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..target import Budgets

MB = 1_000_000


@dataclass(frozen=True, kw_only=True)
class BudgetResult:
    name: str
    limit: float
    value: float
    unit: str
    passed: bool | None
    note: str | None = None

    def describe(self) -> str:
        if self.passed is None:
            return (
                f"{self.name}: {self.value:g} {self.unit} (limit {self.limit:g}, not enforced: {self.note})"
            )
        sign = "<=" if self.passed else ">"
        return f"{self.name}: {self.value:g} {self.unit} {sign} {self.limit:g} {self.unit}"


def check_budgets(
    budgets: Budgets,
    *,
    size_bytes: int,
    startup_warm_p50_ms: float,
    peak_rss_bytes: int,
    emulated: bool,
) -> tuple[BudgetResult, ...]:
    """One result per budget the target sets, in a fixed order (size, startup, RSS)."""
    skipped = "emulated by QEMU, not representative" if emulated else None
    candidates = (
        ("max_size_mb", budgets.max_size_mb, size_bytes / MB, "MB", None),
        ("max_startup_ms", budgets.max_startup_ms, startup_warm_p50_ms, "ms", skipped),
        ("max_rss_mb", budgets.max_rss_mb, peak_rss_bytes / MB, "MB", skipped),
    )
    return tuple(
        BudgetResult(
            name=name,
            limit=limit,
            value=round(value, 2),
            unit=unit,
            # The exact figure is compared; the rounded one is only shown.
            passed=None if note else value <= limit,
            note=note,
        )
        for name, limit, value, unit, note in candidates
        if limit is not None
    )
