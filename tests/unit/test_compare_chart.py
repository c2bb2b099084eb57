"""docs/compare.svg, the README's chart, is what benchmarks/compare.py draws from the committed
results: re-rendered here from benchmarks/results/compare.json, byte for byte, so a chart edited by
hand or left behind by new results fails. After a benchmark run or a change to the chart:
``.venv/bin/python benchmarks/compare.py --rerender benchmarks/results/compare.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT

RESULTS = ROOT / "benchmarks" / "results" / "compare.json"
COMMITTED = ROOT / "docs" / "compare.svg"
RERENDER = "benchmarks/compare.py --rerender benchmarks/results/compare.json"


# matplotlib 3.11 (the dev extra's pin, which the committed bytes depend on) needs Python >= 3.11.
pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="the pinned matplotlib needs 3.11")


def test_committed_chart_is_the_rendered_results(compare: ModuleType, tmp_path: Path) -> None:
    data = json.loads(RESULTS.read_text())
    out = tmp_path / "compare.svg"
    compare.chart(data, out)
    assert out.read_bytes() == COMMITTED.read_bytes(), f"docs/compare.svg is stale: run {RERENDER}"
    svg = out.read_text()
    assert "<dc:date>" not in svg  # no timestamp: the same results give the same bytes
    for v in data["variants"]:  # every measured variant has its row
        assert v["name"] in svg
