"""Where each variant's start-up and memory go, side by side: ``edgebundle test`` of each binary on
this machine, ``--rounds`` times with the variants in turn, the median of each figure: the
in-process start-up split, first inference, steady inference and memory, as one markdown table.

    .venv/bin/python benchmarks/breakdown.py NAME=BINARY... [--runs 20] [--rounds 3] [--out FILE.md]

Build the variants first, e.g. the same model with ``--backend nuitka`` and ``--system-libc``; every
change to start-up should add its row here, so that the table shows what each change bought.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLUMNS: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("size MB", ".2f", lambda r: r["size_bytes"] / 1e6),
    ("warm p50 ms", ".0f", lambda r: r["startup_ms"]["warm_p50"]),
    ("cold ms", ".0f", lambda r: r["startup_ms"]["cold"]),
    ("runtime ms", ".1f", lambda r: _phase(r, "runtime")),
    ("imports ms", ".1f", lambda r: _phase(r, "imports")),
    ("model load ms", ".1f", lambda r: _phase(r, "model_load")),
    ("first inference ms", ".1f", lambda r: _phase(r, "first_inference")),
    ("inference avg ms", ".3f", lambda r: r["benchmark"]["inference_ms"]["avg"] if r["benchmark"] else None),
    ("peak RSS MB", ".1f", lambda r: r["peak_rss_bytes"] / 1e6),
)


def _phase(report: dict[str, Any], phase: str) -> float | None:
    bench = report["benchmark"]
    value = bench["startup_ms"].get(phase) if bench else None
    return None if value is None else float(value)


def _cell(reports: list[dict[str, Any]], fmt: str, get: Callable[[dict[str, Any]], float | None]) -> str:
    values = [v for v in (get(r) for r in reports) if v is not None]
    return format(statistics.median(values), fmt) if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="+", metavar="NAME=BINARY")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    # printed only, unless asked: results/breakdown.md keeps every change's table, one section each
    parser.add_argument("--out", type=Path, help="also write the table here (replacing the file)")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for variant in args.variants:
            name, _, binary = variant.partition("=")
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edgebundle",
                    "test",
                    binary,
                    "--runs",
                    str(args.runs),
                    "--json",
                    "-q",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode not in (0, 7):  # 7: a budget failed, the figures are still there
                print(f"{name}: edgebundle test failed: {proc.stderr.strip()}", file=sys.stderr)
                return 1
            rows.setdefault(name, []).append(json.loads(proc.stdout))
    header = "| variant | " + " | ".join(title for title, _, _ in COLUMNS) + " |"
    lines = [
        "# Start-up and memory by variant",
        "",
        f"`edgebundle test BINARY --runs {args.runs}` on this machine, {args.rounds} rounds of the variants "
        "in turn, the median of each figure "
        "(`benchmarks/breakdown.py`). runtime: launcher, bootloader and Python up to the runtime's first "
        "line; imports: NumPy, Pillow, the interpreter; model load: into the interpreter (TFLite's init).",
        "",
        header,
        "|" + "---|" * (len(COLUMNS) + 1),
        *(
            f"| {name} | " + " | ".join(_cell(reports, fmt, get) for _, fmt, get in COLUMNS) + " |"
            for name, reports in rows.items()
        ),
        "",
    ]
    if args.out:
        args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
