"""What each measure buys: the default runner, and the same runner with ONE measure undone at a time.

    .venv/bin/python benchmarks/ablation.py [--model tests/fixtures/models/digits_float.tflite
        --recipe digits] [--runs 10] [--rounds 3] [--out benchmarks/results]

Each variant is a real runner (PyInstaller, launcher, zstd), with the model's payload appended, measured
with ``edgebundle test`` in turn with the others, --rounds times (medians kept). The difference to the
default in size, warm/cold start and peak RSS is what that measure bought. Variants:

* ``stock numpy``: the NumPy wheel (OpenBLAS) instead of the source build without BLAS;
* ``archive``: PyInstaller's zlib module archive instead of ``--debug noarchive`` + base_library.zip;
* ``no optimize``: bytecode with docstrings and asserts (no ``--optimize 2``);
* ``pyi rthooks``: PyInstaller's own inspect/pkgutil run-time hooks at every start;
* ``eager numpy``: numpy.fft/polynomial/ma imported at start, numpy.random in the binary;
* ``few excludes``: only the excludes the project started with (stdlib TLS, mail, XML, CJK... in);
* ``no strip``: shared libraries with their symbol tables;
* ``zstd -3``: a fast zstd level instead of -19.

Writes OUT/ablation.json and OUT/ablation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgebundle.backends import Stage, bundle, pyinstaller, runners  # noqa: E402
from edgebundle.target import interpreters, load_target  # noqa: E402
from edgebundle.toolchains.venv import HostVenv  # noqa: E402

# The excludes edgebundle had before issue 6 (edgebundle/backends/pyinstaller.py at the spine commit).
ORIGINAL_EXCLUDES = (
    "ebrt.buildtime",
    "tkinter",
    "_tkinter",
    "unittest",
    "pydoc",
    "doctest",
    "pdb",
    "lib2to3",
    "idlelib",
    "test",
    "setuptools",
    "pip",
    "distutils",
    "IPython",
    "matplotlib",
    "PIL.ImageTk",
    "PIL.ImageQt",
    "PIL.ImageShow",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
)


def drop(argv: list[str], flag: str, value: str | None = None) -> list[str]:
    """argv without ``flag VALUE`` pairs (those whose value starts with ``value``, if given)."""
    out: list[str] = []
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == flag and i + 1 < len(argv) and (value is None or argv[i + 1].startswith(value)):
            skip = True
            continue
        out.append(a)
    return out


Edit = Callable[[list[str]], list[str]]


@contextmanager
def variant(edit: Edit | None = None, finish: bool = True, level: int | None = None) -> Iterator[None]:
    """Patch the backend's argv, its finishing step and the zstd level for one runner build."""
    command, finisher, zstd = pyinstaller.command, pyinstaller.finish, runners.ZSTD_LEVEL

    def patched(python: str, stage: Stage) -> list[str]:
        argv = command(python, stage)
        return edit(argv) if edit else argv

    pyinstaller.command = patched  # type: ignore[assignment]
    if not finish:
        pyinstaller.finish = lambda folder: None  # type: ignore[assignment]
    if level is not None:
        runners.ZSTD_LEVEL = level
    try:
        yield
    finally:
        pyinstaller.command, pyinstaller.finish, runners.ZSTD_LEVEL = command, finisher, zstd  # type: ignore[assignment]


def few_excludes(argv: list[str]) -> list[str]:
    argv = drop(argv, "--exclude-module")
    for module in ORIGINAL_EXCLUDES:
        argv[-1:-1] = ["--exclude-module", module]
    return argv


def eager_numpy(argv: list[str]) -> list[str]:
    return drop(drop(argv, "--runtime-hook"), "--exclude-module", "numpy.random")


VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "stock numpy": {"stock": True},
    "archive": {"edit": lambda a: drop(a, "--debug", "noarchive"), "finish": False},
    "no optimize": {"edit": lambda a: drop(a, "--optimize")},
    "pyi rthooks": {"edit": lambda a: drop(a, "--additional-hooks-dir")},
    "eager numpy": {"edit": eager_numpy},
    "few excludes": {"edit": few_excludes},
    "no strip": {"edit": lambda a: [x for x in a if x != "--strip"]},
    "zstd -3": {"level": 3},
}


class StockVenv(HostVenv):
    """The build venv with the stock NumPy wheel (no source build): pins without build-from-source."""

    def __init__(self) -> None:
        super().__init__(load_target("x86_64"), "pyinstaller")
        self.source_builds = {}
        self.path = self.path.with_name(self.path.name + "-stock-numpy")


def build_variant(name: str, spec: dict[str, Any], model: Path, recipe: str, out: Path) -> Path:
    """A runner made with one measure undone, then the model's payload (from a normal build) on it."""
    target = load_target("x86_64")
    pins = interpreters()[target.interpreter]
    toolchain: HostVenv = StockVenv() if spec.get("stock") else HostVenv(target, "pyinstaller")
    toolchain.ensure(print)
    normal = out / "normal"
    subprocess.run(
        [sys.executable, "-m", "edgebundle", "build", str(model), "--recipe", recipe, "-o", str(normal)],
        check=True,
        capture_output=True,
    )
    if name == "default":
        return normal
    work = Path(tempfile.mkdtemp(prefix="ablation-", dir=out))
    with variant(spec.get("edit"), spec.get("finish", True), spec.get("level")):
        runners._make_runner(work, work / "log", toolchain, "pyinstaller", pins, print, keep_build_dir=False)
    runner = runners.load(work)
    binary = out / name.replace(" ", "-")
    bundle.assemble(runner.prefix, runner.runner_offset, runner.key, bundle.read_app_files(normal), binary)
    binary.chmod(0o755)
    shutil.rmtree(work, ignore_errors=True)
    return binary


def measure(binary: Path, runs: int, scratch: Path) -> dict[str, float]:
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=scratch))
    report = scratch / "report.json"
    env = {**os.environ, "EDGEBUNDLE_CACHE_DIR": str(cache)}
    subprocess.run(
        [sys.executable, "-m", "edgebundle", "test", str(binary), "--runs", str(runs), "--json", str(report)],
        capture_output=True,
        env=env,
        check=False,
    )
    shutil.rmtree(cache, ignore_errors=True)
    r = json.loads(report.read_text())
    return {
        "cold_ms": r["startup_ms"]["cold"],
        "warm_ms": r["startup_ms"]["warm_p50"],
        "peak_rss_bytes": r["peak_rss_bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "tests/fixtures/models/digits_float.tflite")
    parser.add_argument("--recipe", default="digits")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(VARIANTS)
    if "default" not in names:
        names.insert(0, "default")

    scratch = Path(tempfile.mkdtemp(prefix="edgebundle-ablation-"))
    try:
        binaries = {n: build_variant(n, VARIANTS[n], args.model, args.recipe, scratch) for n in names}
        samples: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for r in range(args.rounds):
            for n in names:
                print(f"ablation: round {r + 1}/{args.rounds}: {n}", file=sys.stderr, flush=True)
                samples[n].append(measure(binaries[n], args.runs, scratch))
        sizes = {n: binaries[n].stat().st_size for n in names}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    med = {n: {k: statistics.median(s[k] for s in samples[n]) for k in samples[n][0]} for n in names}
    base = med["default"]
    lines = [
        f"`benchmarks/ablation.py --runs {args.runs} --rounds {args.rounds}` on {args.model.name} "
        f"({os.uname().machine}, {os.cpu_count()} CPUs): each row undoes ONE measure of the default; the "
        "deltas are what that measure buys (medians; warm/cold ms are noisy on a shared machine).",
        "",
        "| variant | size MB | warm ms | cold ms | peak RSS MB | measure buys: size | warm | cold | RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        m = med[n]
        if n == "default":
            d = "| - | - | - | - |"
        else:
            size = (sizes[n] - sizes["default"]) / 1e6
            rss = (m["peak_rss_bytes"] - base["peak_rss_bytes"]) / 1e6
            warm, cold = m["warm_ms"] - base["warm_ms"], m["cold_ms"] - base["cold_ms"]
            d = f"| {size:+.1f} MB | {warm:+.0f} ms | {cold:+.0f} ms | {rss:+.1f} MB |"
        lines.append(
            f"| {n} | {sizes[n] / 1e6:.1f} | {m['warm_ms']:.0f} | {m['cold_ms']:.0f} | "
            f"{m['peak_rss_bytes'] / 1e6:.1f} {d}"
        )
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.md").write_text(text)
    (args.out / "ablation.json").write_text(
        json.dumps({"sizes": sizes, "medians": med, "samples": samples}, indent=1) + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
