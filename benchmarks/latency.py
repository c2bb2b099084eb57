"""Inference latency inside the binary against the same interpreter in the plain script, interleaved:

    .venv/bin/python benchmarks/latency.py [--models mobilenet_v2,face] [--pairs 6] [--inferences 40]

compare.py measures latency once per round among many variants, where the machine's noise (+-15% here
between rounds) swamps a 5% goal. This runs the binary's ``--eb-bench`` and the plain script's in
alternation, ``--pairs`` times, and prints the median of the per-pair ratios of median latencies.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import compare  # noqa: E402


def median_latency(command: list[str], inferences: int, cwd: Path) -> float:
    out = subprocess.run(
        [*command, "--eb-bench", str(inferences)], capture_output=True, text=True, cwd=cwd, check=True
    ).stdout
    return statistics.median(json.loads(line)["ms"] for line in out.splitlines() if '"inference"' in line)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mobilenet_v2,face")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--inferences", type=int, default=40)
    parser.add_argument("--tf-python", default=compare.TF_PYTHON)
    args = parser.parse_args()
    where = Path(tempfile.mkdtemp(prefix="edgebundle-latency-"))
    try:
        venv = compare.baseline_venv("x86_64-tflite")
        for model in compare.models(args.models.split(","), args.tf_python):
            binary, _, _ = compare.edgebundle_build(model, "x86_64-tflite", "pyinstaller", where)
            app = compare.app_dir(binary, model, where, "tflite-runtime")
            plain = [str(venv / "bin" / "python"), str(app / "main.py")]
            pairs = [
                (
                    median_latency([str(binary)], args.inferences, app),
                    median_latency(plain, args.inferences, app),
                )
                for _ in range(args.pairs)
            ]
            ratio = statistics.median(b / p for b, p in pairs)
            print(
                f"{model.name}: binary {statistics.median(b for b, _ in pairs):.3f} ms, plain "
                f"{statistics.median(p for _, p in pairs):.3f} ms, median per-pair ratio {ratio:.3f}x "
                f"({args.pairs} pairs of {args.inferences} inferences)"
            )
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
