"""Side-by-side start-up benchmark: a built binary vs. the same runtime as a plain `python script.py`.

    .venv/bin/python benchmarks/startup.py dist/digits tests/fixtures/models/digits_float.tflite \
        tests/fixtures/digits/sample_7.png [--runs 15]

Both run one complete inference on IMAGE (exec to exit), interleaved run by run so that machine noise
hits both alike; the result is a ratio, which carries across machines where absolute times do not.
The plain script runs in the binary's own build environment (same interpreter, NumPy, Pillow).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgebundle.target import load_target  # noqa: E402
from edgebundle.toolchains.venv import HostVenv  # noqa: E402


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        argv,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("binary", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    binary = args.binary.resolve()
    manifest = json.loads(subprocess.run([str(binary), "--info"], capture_output=True, check=True).stdout)
    target = load_target(str(ROOT / "targets" / f"{manifest['target']['name']}.toml"))
    python = HostVenv(target, manifest["backend"]).python

    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app"
        shutil.copytree(
            ROOT / "edgebundle" / "runtime", app / "ebrt", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copyfile(args.model, app / "model.tflite")
        (app / "manifest.json").write_text(json.dumps(manifest))
        (app / "main.py").write_text("from ebrt.app import entry\n\nentry()\n")
        image = str(args.image.resolve())
        script = [python, str(app / "main.py"), image]
        frozen = [str(binary), image]
        timed(script, app)  # warm the page cache for both before measuring
        timed(frozen, app)
        plain, bundled = [], []
        for _ in range(args.runs):
            plain.append(timed(script, app))
            bundled.append(timed(frozen, app))

    p50_plain, p50_bin = statistics.median(plain), statistics.median(bundled)
    print(f"plain `python script.py` : p50 {p50_plain:7.1f} ms  (min {min(plain):.1f})")
    print(f"{binary.name:25}: p50 {p50_bin:7.1f} ms  (min {min(bundled):.1f})")
    print(
        f"warm start ratio binary / plain script: {p50_bin / p50_plain:.2f}x  "
        f"({args.runs} interleaved runs, size {binary.stat().st_size / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    main()
