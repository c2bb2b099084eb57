"""What each measure buys: the default runner, and the same runner with ONE measure undone at a time.

    .venv/bin/python benchmarks/ablation.py [--model tests/fixtures/models/digits_float.tflite
        --recipe digits] [--runs 10] [--rounds 3] [--out benchmarks/results]

Each variant is a real runner (PyInstaller, launcher, zstd), with the model's payload appended, measured
with ``edgebundle test`` (and the CPU time of warm starts, which machine noise hardly moves), the
variants in a shuffled order in each of --rounds rounds. The median difference to the default within a
round, in size, warm/cold start and peak RSS, is what that measure bought. Variants:

* ``stock numpy``: the NumPy wheel (OpenBLAS) instead of the source build without BLAS;
* ``archive``: PyInstaller's zlib module archive instead of ``--debug noarchive`` + base_library.zip;
* ``no optimize``: bytecode with docstrings and asserts (no ``--optimize 2``);
* ``pyi rthooks``: PyInstaller's own inspect/pkgutil run-time hooks at every start;
* ``eager numpy``: numpy.fft/polynomial/ma imported at start, numpy.random and LAPACK in the binary;
* ``few excludes``: only the excludes the project started with (stdlib TLS, mail, XML, CJK... in);
* ``no strip``: shared libraries with their symbol tables;
* ``zstd -3``: a fast zstd level instead of -19.

Writes OUT/ablation.json and OUT/ablation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
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
    argv = drop(drop(argv, "--runtime-hook"), "--exclude-module", "numpy.random")
    # without the hook's stand-ins, import numpy needs numpy.linalg's compiled modules (and LAPACK)
    argv = drop(argv, "--exclude-module", "numpy.linalg.")
    # numpy.random imports secrets from compiled code, where PyInstaller does not see it
    argv[-1:-1] = ["--hidden-import", "secrets"]
    return argv


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
        super().__init__(load_target("x86_64-tflite"), "pyinstaller")
        self.source_builds = {}
        self.path = self.path.with_name(self.path.name + "-stock-numpy")


def build_variant(name: str, spec: dict[str, Any], model: Path, recipe: str, out: Path) -> Path:
    """A runner made with one measure undone, then the model's payload (from a normal build) on it."""
    target = load_target("x86_64-tflite")
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
    report.unlink(missing_ok=True)
    env = {**os.environ, "EDGEBUNDLE_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgebundle",
            "test",
            str(binary),
            "--runs",
            str(runs),
            "--json-out",
            str(report),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode not in (0, 7):  # 7: a budget failed, the figures are still there
        raise RuntimeError(f"{binary.name}: edgebundle test failed: {proc.stderr.strip()[-2000:]}")
    r = json.loads(report.read_text())
    return {
        "cold_ms": r["startup_ms"]["cold"],
        "warm_ms": r["startup_ms"]["warm_p50"],
        "warm_cpu_ms": cpu_ms(binary, runs, scratch),
        "peak_rss_bytes": r["peak_rss_bytes"],
    }


def cpu_ms(binary: Path, runs: int, scratch: Path) -> float:
    """Median CPU time (user + system) of warm ``--self-test`` runs: unlike wall time, it does not grow
    when other work on a shared machine takes the CPU, so small differences show."""
    env = {"PATH": "/usr/bin:/bin", "EDGEBUNDLE_CACHE_DIR": str(scratch / "cpu-cache")}
    subprocess.run([str(binary), "--self-test"], env=env, capture_output=True, check=True)  # unpack
    spent = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([str(binary), "--self-test"], env=env, capture_output=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return statistics.median(spent)


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
        order = random.Random(0)
        for r in range(args.rounds):
            # each round in another order, so that a machine getting busier hits no variant more
            for n in order.sample(names, len(names)):
                print(f"ablation: round {r + 1}/{args.rounds}: {n}", file=sys.stderr, flush=True)
                samples[n].append(measure(binaries[n], args.runs, scratch))
        sizes = {n: binaries[n].stat().st_size for n in names}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    med = {n: {k: statistics.median(s[k] for s in samples[n]) for k in samples[n][0]} for n in names}
    # what a measure buys: the median over rounds of (variant - default) within the same round
    delta = {
        n: {
            k: statistics.median(v[k] - d[k] for v, d in zip(samples[n], samples["default"], strict=True))
            for k in samples[n][0]
        }
        for n in names
    }
    lines = [
        f"`benchmarks/ablation.py --runs {args.runs} --rounds {args.rounds}` on {args.model.name} "
        f"({os.uname().machine}, {os.cpu_count()} CPUs): each row undoes ONE measure of the default; the "
        "deltas (medians over rounds of variant minus default in the same round, rounds in shuffled "
        "orders) are what that measure buys. Sizes and memory are exact; times are noisy on a shared "
        "machine.",
        "",
        "| variant | size MB | warm ms | warm CPU ms | cold ms | peak RSS MB | measure buys: size | warm "
        "| warm CPU | cold | RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        m = med[n]
        if n == "default":
            d = "| - | - | - | - | - |"
        else:
            size = (sizes[n] - sizes["default"]) / 1e6
            rss = delta[n]["peak_rss_bytes"] / 1e6
            warm, cpu, cold = delta[n]["warm_ms"], delta[n]["warm_cpu_ms"], delta[n]["cold_ms"]
            d = f"| {size:+.1f} MB | {warm:+.0f} ms | {cpu:+.0f} ms | {cold:+.0f} ms | {rss:+.1f} MB |"
        lines.append(
            f"| {n} | {sizes[n] / 1e6:.1f} | {m['warm_ms']:.0f} | {m['warm_cpu_ms']:.0f} | "
            f"{m['cold_ms']:.0f} | {m['peak_rss_bytes'] / 1e6:.1f} {d}"
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
