"""Where each variant's start-up and memory go, side by side: ``edgebundle test`` of each binary on
this machine (one run each, in turn), its in-process figures (the start-up split, first inference,
steady inference, memory) as one markdown table.

    .venv/bin/python benchmarks/breakdown.py NAME=BINARY... [--runs 20] [--out FILE.md]

Build the variants first, e.g. the same model with ``--backend nuitka`` and ``--system-libc``; every
change to start-up should add its row here, so that the table shows what each change bought.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = (
    ("size MB", lambda r: f"{r['size_bytes'] / 1e6:.2f}"),
    ("warm p50 ms", lambda r: f"{r['startup_ms']['warm_p50']:.0f}"),
    ("cold ms", lambda r: f"{r['startup_ms']['cold']:.0f}"),
    ("runtime ms", lambda r: _ms(r, "runtime")),
    ("imports ms", lambda r: _ms(r, "imports")),
    ("model load ms", lambda r: _ms(r, "model_load")),
    ("first inference ms", lambda r: _ms(r, "first_inference")),
    ("inference avg ms", lambda r: f"{r['benchmark']['inference_ms']['avg']:.3f}" if r["benchmark"] else "-"),
    ("peak RSS MB", lambda r: f"{r['peak_rss_bytes'] / 1e6:.1f}"),
)


def _ms(report: dict[str, Any], phase: str) -> str:
    bench = report["benchmark"]
    value = bench["startup_ms"].get(phase) if bench else None
    return "-" if value is None else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="+", metavar="NAME=BINARY")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "breakdown.md")
    args = parser.parse_args()
    rows = []
    for variant in args.variants:
        name, _, binary = variant.partition("=")
        proc = subprocess.run(
            [sys.executable, "-m", "edgebundle", "test", binary, "--runs", str(args.runs), "--json", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode not in (0, 7):  # 7: a budget failed, the figures are still there
            print(f"{name}: edgebundle test failed: {proc.stderr.strip()}", file=sys.stderr)
            return 1
        rows.append((name, json.loads(proc.stdout)))
    header = "| variant | " + " | ".join(title for title, _ in COLUMNS) + " |"
    lines = [
        "# Start-up and memory by variant",
        "",
        f"`edgebundle test BINARY --runs {args.runs}` on this machine, each variant in turn "
        "(`benchmarks/breakdown.py`). runtime: launcher, bootloader and Python up to the runtime's first "
        "line; imports: NumPy, Pillow, the interpreter; model load: into the interpreter (TFLite's init).",
        "",
        header,
        "|" + "---|" * (len(COLUMNS) + 1),
        *(f"| {name} | " + " | ".join(cell(r) for _, cell in COLUMNS) + " |" for name, r in rows),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
