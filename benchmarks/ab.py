"""Two built binaries side by side: start-up of ``--self-test`` and of one image, interleaved run by run,
and the first start after copying (``cold``: an empty runtime cache each time, so the runtime is
unpacked) and the file sizes.

    .venv/bin/python benchmarks/ab.py OLD_BINARY NEW_BINARY [--image IMAGE] [--runs 30] [--cold-runs 10]

For "did this change make start-up worse": build the same model with the old and the new checkout,
then compare. Each binary is started twice first (its runtime unpacked, the page cache warm), then
both alternate, so that machine noise hits them alike; medians and the new/old ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(binary: Path, args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([str(binary), *args], env=env, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--image", type=Path, default=ROOT / "tests/fixtures/digits/sample_7.png")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--cold-runs", type=int, default=10, help="0: no cold starts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {"PATH": "/usr/bin:/bin", "HOME": home}
        modes = {"--self-test": ["--self-test"], "image": [str(args.image)]}
        for binary in (args.old, args.new):
            for _ in range(2):
                timed(binary, ["--self-test"], env)
        ms: dict[str, dict[str, list[float]]] = {mode: {"old": [], "new": []} for mode in modes}
        for _ in range(args.runs):
            for mode, argv in modes.items():
                ms[mode]["old"].append(timed(args.old, argv, env))
                ms[mode]["new"].append(timed(args.new, argv, env))
        if args.cold_runs:
            ms["cold"] = {"old": [], "new": []}
        for _ in range(args.cold_runs):
            for which, binary in (("old", args.old), ("new", args.new)):
                with tempfile.TemporaryDirectory() as cache:
                    ms["cold"][which].append(
                        timed(binary, ["--self-test"], {**env, "EDGEBUNDLE_CACHE_DIR": cache})
                    )
    old_size, new_size = args.old.stat().st_size, args.new.stat().st_size
    print(f"{'size':12} old {old_size:9,} B  new {new_size:9,} B  new-old {new_size - old_size:+,} B")
    for mode, runs in ms.items():
        old, new = statistics.median(runs["old"]), statistics.median(runs["new"])
        print(f"{mode:12} old {old:7.1f} ms  new {new:7.1f} ms  new/old {new / old:.3f}")


if __name__ == "__main__":
    main()
