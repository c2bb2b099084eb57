"""Side-by-side benchmark, one command, one machine, one run:

    .venv/bin/python benchmarks/compare.py [--runs 10] [--rounds 3] [--targets x86_64,x86_64-tflite]
        [--backends pyinstaller,nuitka]

For each model (the digits fixture; a face-detector-sized and a MobileNetV2-sized model generated with
seeded random weights by tools/make_mobilenet.py, cached) it builds and measures:

* ``runtime as script`` (``plain script`` in results before issue 18): the runtime as ``python main.py
  --self-test`` next to its model, in a venv with the stock pinned wheels (NumPy with OpenBLAS);
* ``hand-written script``: what an experienced user writes instead (benchmarks/handwritten.py: NumPy,
  Pillow and the interpreter, the recipe's constants baked in, no argparse, manifest or self-test
  comparison), generated per model from the binary's manifest, run as ``python script.py IMAGE`` on
  the binary's self-test image in the same venv. Its answer must agree with the binary's for that
  image (the top-1 of a classifier, else the outputs' shapes and first values), or nothing is reported;
* ``pyinstaller --onefile``: the runtime as a script frozen by hand, the baseline users make;
* ``edgebundle <target> [<backend>]``: ``edgebundle build`` for each target and backend this host can
  build (Nuitka: native targets only; arm64 is emulated: its size means something there, and its
  memory as the report's estimate without QEMU).

Binaries are measured with ``edgebundle test`` (size, cold start = the first run after the copy with an
empty cache, warm start p50 over --runs, whole-tree peak RSS, inference latency p50), the plain script
with the same measuring code (edgebundle/runtime/measure.py). Variants are measured in turn, --rounds
times, and the medians kept, so that the noise of a shared machine hits them alike. Every ratio is the
median of per-round ratios to the FASTER of the two plain scripts in that round, per measure (warm,
cold, latency; RSS: the smaller), so that how the plain script is written cannot flatter a ratio
(issue 18); the table's headers and the notes under it say which script each ratio used, and the
issue's goals are checked against that reference. Results without the hand-written script (older
JSON) are rendered as they were: ratios to the runtime as a script. Writes
``OUT/compare.json`` and ``OUT/compare.md`` (the table in docs/benchmarks.md), prints the table, and
draws it as ``docs/compare.svg`` (the chart in the README; needs matplotlib, a dev dependency).

``--rerender OUT/compare.json`` writes all three again from a run's JSON without measuring; the chart
is deterministic (same JSON, same matplotlib: same bytes), which tests/unit/test_compare_chart.py
checks against the committed one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import handwritten  # noqa: E402
from edgebundle.backends import bundle  # noqa: E402
from edgebundle.proc import run as run_cmd  # noqa: E402
from edgebundle.target import interpreters, load_target  # noqa: E402
from edgebundle.toolchains import cache_dir, content_key, pip_install_argv, requirements  # noqa: E402

EDGEBUNDLE = [sys.executable, "-m", "edgebundle"]
MEASURE = [sys.executable, "-m", "edgebundle.runtime.measure"]
TF_PYTHON = "/work/fixture-venv/bin/python"
CHART = ROOT / "docs" / "compare.svg"


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    recipe: str


@dataclass
class Variant:
    model: str
    name: str
    kind: str  # plain (the runtime as a script) | handwritten | onefile | edgebundle
    interpreter: str = "tflite-runtime"  # its ratios are to the plain scripts with this interpreter
    binary: Path | None = None
    app: Path | None = None
    python: str | None = None
    device: str = "local"
    env: dict[str, str] = field(default_factory=dict)
    build_s: float | None = None
    runner_cached: bool | None = None
    size_bytes: int | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def say(text: str) -> None:
    print(f"compare: {text}", file=sys.stderr, flush=True)


def cached(name: str, parts: object, make: Callable[[Path], None]) -> Path:
    """A file made once per content key under cache_dir()/bench."""
    path = cache_dir() / "bench" / f"{name}-{content_key(parts)}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.unlink(missing_ok=True)
        make(tmp)
        tmp.rename(path)
    return path


# ---------------------------------------------------------------------------- inputs


def models(names: list[str], tf_python: str | None) -> list[Model]:
    found = []
    generator = ROOT / "tools" / "make_mobilenet.py"
    for name in names:
        if name == "digits":
            found.append(Model("digits", ROOT / "tests/fixtures/models/digits_float.tflite", "digits"))
            continue
        if not tf_python or not Path(tf_python).exists():
            say(f"skipping {name}: it needs TensorFlow (--tf-python; tools/requirements-fixtures.txt)")
            continue
        path = cached(
            f"{name}.tflite",
            [name, generator.read_bytes().hex()],
            lambda out, n=name: run_cmd([tf_python, str(generator), n, str(out)], what=f"generating {n}"),
        )
        recipe = "imagenet-mobilenet" if name == "mobilenet_v2" else str(ROOT / "benchmarks" / "face.toml")
        found.append(Model(name, path, recipe))
    return found


def baseline_venv(target: str) -> Path:
    """What a user's venv holds: the target's pins as stock wheels (NumPy with OpenBLAS), PyInstaller."""
    t = load_target(target)
    reqs = requirements(t, "pyinstaller")

    def make(tmp: Path) -> None:
        run_cmd([f"python{t.python}", "-m", "venv", str(tmp)], what="baseline venv")
        run_cmd(pip_install_argv(str(tmp / "bin" / "python"), reqs), what="baseline venv")

    return cached(f"baseline-venv-{t.interpreter}", reqs, make)


def reference_target(target: str) -> str:
    """The target whose plain scripts a binary is compared with: its own, or, for an interpreter no
    user scripts in Python (LiteRT's C API, the default targets'), x86_64-tflite's: a user's plain
    script imports tflite_runtime and NumPy."""
    return target if interpreters()[load_target(target).interpreter].numpy else "x86_64-tflite"


def app_dir(binary: Path, model: Model, where: Path, interpreter: str) -> Path:
    """The runtime as a plain script next to the binary's own model, manifest and self-test files."""
    app = where / f"app-{model.name}-{interpreter}"
    shutil.rmtree(app, ignore_errors=True)
    shutil.copytree(
        ROOT / "edgebundle" / "runtime", app / "ebrt", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name, data in bundle.read_app_files(binary).items():
        (app / name).write_bytes(data)
    (app / "main.py").write_text("from ebrt.app import entry\n\nentry()\n")
    return app


def hand_dir(binary: Path, model: Model, where: Path, interpreter: str) -> Path:
    """The hand-written script (benchmarks/handwritten.py) with the binary's model and self-test image,
    the recipe's constants read from the binary's manifest; handwritten.Unsupported if it cannot be."""
    files = bundle.read_app_files(binary)
    manifest = json.loads(files["manifest.json"])
    app = where / f"hand-{model.name}-{interpreter}"
    shutil.rmtree(app, ignore_errors=True)
    app.mkdir()
    (app / "script.py").write_text(handwritten.script(manifest))
    (app / "bench.py").write_text(handwritten.script(manifest, bench=True))
    for name in (manifest["model"]["file"], manifest["selftest"]["image"], "manifest.json"):
        (app / name).write_bytes(
            files[name]
        )  # the manifest only for check_same_work, never read by the script
    return app


def check_same_work(hand: Variant, binary: Path, scratch: Path) -> None:
    """The hand-written script and the binary must give the same answer for the self-test image (the
    top-1 of a classifier, else the outputs' shapes and first values): otherwise it does other work
    than the binary, and no ratio to it means anything. Exits without a report when they differ."""
    assert hand.app is not None
    assert hand.python is not None
    manifest = json.loads((hand.app / "manifest.json").read_text())
    image = manifest["selftest"]["image"]
    work = Path(tempfile.mkdtemp(prefix="same-work-", dir=scratch))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work)}
    mine = run_cmd([hand.python, "script.py", image], cwd=hand.app, env=env, echo=None)
    shutil.copyfile(hand.app / image, work / image)
    theirs = run_cmd([str(binary), "--save-outputs", "out.npz", image], cwd=work, env=env, echo=None)
    problem = handwritten.disagreement(
        manifest, handwritten.parse(mine), handwritten.parse(theirs), (work / "out.npz").read_bytes()
    )
    shutil.rmtree(work, ignore_errors=True)
    if problem:
        raise SystemExit(
            f"compare: {hand.model}: the hand-written script ({hand.interpreter}) does not do the binary's "
            f"work on {image}: {problem}; nothing reported (see benchmarks/handwritten.py)"
        )
    say(f"{hand.model}: the hand-written script ({hand.interpreter}) agrees with {binary.name} on {image}")


def hand_onefile(venv: Path, app: Path, model: Model, out_dir: Path) -> tuple[Path, float]:
    """``pyinstaller --onefile`` of the plain script with its files as data: what users make by hand."""
    data = sorted(p for p in app.iterdir() if p.is_file() and p.name != "main.py")
    key = [hashlib.sha256(p.read_bytes()).hexdigest() for p in [*data, *sorted(app.glob("ebrt/*.py"))]]
    spent = [0.0]

    def make(tmp: Path) -> None:
        work = Path(tempfile.mkdtemp(prefix="compare-onefile-"))
        start = time.monotonic()
        argv = [
            str(venv / "bin" / "python"),
            "-m",
            "PyInstaller",
            "--onefile",
            "--noconfirm",
            "--log-level",
            "WARN",
        ]
        argv += [
            "--name",
            f"{model.name}-onefile",
            "--distpath",
            str(work / "dist"),
            "--workpath",
            str(work / "b"),
        ]
        argv += [
            "--specpath",
            str(work),
            "--paths",
            str(app),
            "--hidden-import",
            "tflite_runtime.interpreter",
        ]
        for p in data:
            argv += ["--add-data", f"{p}:."]
        run_cmd([*argv, str(app / "main.py")], what="pyinstaller --onefile (hand-style baseline)")
        spent[0] = time.monotonic() - start
        tmp.mkdir()
        shutil.move(str(work / "dist" / f"{model.name}-onefile"), tmp / "binary")
        (tmp / "build_s").write_text(f"{spent[0]:.1f}")
        shutil.rmtree(work, ignore_errors=True)

    cache = cached(f"onefile-{model.name}", key, make)
    out = out_dir / f"{model.name}-onefile"
    shutil.copyfile(cache / "binary", out)
    out.chmod(0o755)
    return out, float((cache / "build_s").read_text())


def edgebundle_build(model: Model, target: str, backend: str, out_dir: Path) -> tuple[Path, float, bool]:
    out = out_dir / f"{model.name}-{target}-{backend}"
    report = out_dir / f"{model.name}-{target}-{backend}.build.json"
    argv = [
        *EDGEBUNDLE,
        "build",
        str(model.path),
        "--recipe",
        model.recipe,
        "--target",
        target,
        "--backend",
        backend,
        "-o",
        str(out),
    ]
    proc = subprocess.run(
        [*argv, "--json-out", str(report)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "build failed")
    return (
        out,
        json.loads(report.read_text())["build_seconds"],
        "runner (" in proc.stderr and ": cached" in proc.stderr,
    )


# ---------------------------------------------------------------------------- measuring


def measure_binary(v: Variant, runs: int, scratch: Path) -> dict[str, Any]:
    assert v.binary is not None
    # edgebundle test runs the binary with an empty runtime cache of its own: the cold run unpacks
    out = scratch / f"{v.model}-{v.name}.json"
    env = {**os.environ, **v.env}
    proc = subprocess.run(
        [
            *EDGEBUNDLE,
            "test",
            str(v.binary),
            "--device",
            v.device,
            "--runs",
            str(runs),
            "--json-out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if not out.exists():  # exit 7 (a budget) still writes the report; anything else is a failure
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "test failed")
    r = json.loads(out.read_text())
    return {
        "cold_ms": r["startup_ms"]["cold"],
        "warm_ms": r["startup_ms"]["warm_p50"],
        "peak_rss_bytes": r["peak_rss_bytes"],
        "processes": r["rss"]["processes"],
        "latency_ms": r["latency_ms"]["p50"],
        "guest_rss_bytes": r["rss"].get("guest_estimate_bytes"),
    }


def measure_plain(v: Variant, runs: int, scratch: Path) -> dict[str, Any]:
    """The same measurements for ``python main.py --self-test`` (the hand-written script: ``python
    script.py IMAGE`` on the self-test image): cold = first run after a fresh copy (its .pyc files not
    yet compiled), then the runtime's own measuring mode, and --eb-bench (``bench.py IMAGE N``)."""
    assert v.app is not None
    assert v.python is not None
    app = Path(tempfile.mkdtemp(prefix="plain-", dir=scratch)) / "app"
    shutil.copytree(v.app, app)
    if v.kind == "handwritten":
        image = json.loads((app / "manifest.json").read_text())["selftest"]["image"]
        command = [v.python, str(app / "script.py"), image]
        bench_argv = [v.python, str(app / "bench.py"), image, str(runs)]
    else:
        command = [v.python, str(app / "main.py"), "--self-test"]
        bench_argv = [v.python, str(app / "main.py"), "--eb-bench", str(runs)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(app)}
    start = time.perf_counter()
    subprocess.run(command, cwd=app, env=env, capture_output=True, check=True)
    cold = (time.perf_counter() - start) * 1000
    lines = run_cmd([*MEASURE, "startup", "--runs", str(runs), "--", *command], cwd=app, env=env, echo=None)
    warm = [json.loads(line) for line in lines.splitlines()]
    bench = run_cmd(bench_argv, cwd=app, env=env, echo=None)
    latencies = [json.loads(line)["ms"] for line in bench.splitlines() if '"inference"' in line]
    shutil.rmtree(app.parent, ignore_errors=True)
    return {
        "cold_ms": round(cold, 1),
        "warm_ms": round(statistics.median(r["ms"] for r in warm), 1),
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in warm),
        "processes": max(r["processes"] for r in warm),
        "latency_ms": statistics.median(latencies),
    }


KEYS = ("cold_ms", "warm_ms", "peak_rss_bytes", "latency_ms")
PLAIN_KINDS = ("plain", "handwritten")  # the references: the runtime as a script, a hand-written one


def round_reference(refs: list[Variant], i: int, key: str) -> Variant | None:
    """The reference of round ``i`` for ``key``: the plain script with the lowest value in that round
    (the faster one; for RSS the smaller), among those measured in it."""
    measured = [p for p in refs if i < len(p.samples) and p.samples[i][key]]
    return min(measured, key=lambda p: p.samples[i][key], default=None)


def summary(v: Variant, refs: list[Variant]) -> dict[str, Any]:
    """Medians of the rounds, and the medians of the per-round ratios to the plain scripts ``refs``
    (in each round and per measure, the lowest of them): each round measures every variant in turn, so
    a ratio within a round is the least disturbed by the machine's noise. With both plain scripts,
    ``reference`` names the one each round's ratio used, per measure."""
    if not v.samples:
        return {}
    out: dict[str, Any] = {k: statistics.median(s[k] for s in v.samples) for k in KEYS}
    guest = [s["guest_rss_bytes"] for s in v.samples if s.get("guest_rss_bytes") is not None]
    if guest:
        out["guest_rss_bytes"] = statistics.median(guest)
    if any(p.samples for p in refs) and v.device == "local":
        chosen = {k: [(s, round_reference(refs, i, k)) for i, s in enumerate(v.samples)] for k in KEYS}
        out["ratio"] = {
            k: statistics.median(s[k] / p.samples[i][k] for i, (s, p) in enumerate(pairs) if p)
            for k, pairs in chosen.items()
        }
        if len(refs) > 1:
            out["reference"] = {k: [p.name if p else None for _, p in pairs] for k, pairs in chosen.items()}
    return out


def references(v: Variant, variants: list[Variant]) -> list[Variant]:
    """The plain scripts of ``v``'s model and interpreter (old results: the runtime as a script only)."""
    return [
        p for p in variants if p.kind in PLAIN_KINDS and (p.model, p.interpreter) == (v.model, v.interpreter)
    ]


def robust(variants: list[Variant]) -> bool:
    """Whether the ratios are to the faster of two plain scripts (results before the hand-written
    script had only the runtime as a script)."""
    return any(v.kind == "handwritten" for v in variants)


# ---------------------------------------------------------------------------- report


def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def ratio(x: float | None, ref: float | None) -> str:
    return "-" if not x or not ref else f"{x / ref:.2f}x"


def table(variants: list[Variant], model_sizes: dict[str, int]) -> str:
    """The Markdown table. Its ratio columns name their reference: ``plain`` (the runtime as a script,
    results before the hand-written script) or the faster (RSS: smaller) of the two plain scripts."""
    faster, smaller = ("faster plain", "smaller plain") if robust(variants) else ("plain", "plain")
    head = (
        f"| model | variant | size MB (model) | cold start ms | warm start ms | warm / {faster} | "
        f"cold / {faster} | peak RSS MB | RSS / {smaller} | latency ms | latency / {faster} | build s |"
    )
    rows = [head, "|---" * (head.count("|") - 1) + "|"]
    for v in variants:
        if v.error:
            rows.append(f"| {v.model} | {v.name} | {v.error} |" + " |" * 9)
            continue
        s = summary(v, references(v, variants))
        r = s.get("ratio", {})

        def x(key: str, r: dict[str, float] = r) -> str:
            return f"{r[key]:.2f}x" if key in r else "-"

        size = "-" if v.size_bytes is None else f"{mb(v.size_bytes)} ({mb(model_sizes[v.model])})"
        cached_runner = " (cached runner)" if v.runner_cached else ""
        build = "-" if v.build_s is None else f"{v.build_s:.1f}{cached_runner}"
        name = v.name + (" (QEMU)" if v.device == "qemu" else "")
        if v.kind in PLAIN_KINDS and v.interpreter != "tflite-runtime":
            name += f" ({v.interpreter})"
        rss = mb(s["peak_rss_bytes"])
        if "guest_rss_bytes" in s:
            rss += f" (~{mb(s['guest_rss_bytes'])} without QEMU)"
        rows.append(
            f"| {v.model} | {name} | {size} | {s['cold_ms']:.0f} | {s['warm_ms']:.0f} | {x('warm_ms')} | "
            f"{x('cold_ms')} | {rss} | {x('peak_rss_bytes')} | {s['latency_ms']:.3f} | "
            f"{x('latency_ms')} | {build} |"
        )
    return "\n".join(rows)


METRICS = {"warm_ms": "warm", "cold_ms": "cold", "peak_rss_bytes": "RSS", "latency_ms": "latency"}


def reference_notes(variants: list[Variant]) -> list[str]:
    """Which plain script each ratio used, per model, interpreter and measure: how many rounds each
    was the faster (RSS: the smaller). Nothing for results with one plain script."""
    out = []
    for p in variants:
        refs = references(p, variants)
        if p.kind != "handwritten" or len(refs) < 2:
            continue
        rounds = max(len(r.samples) for r in refs)
        parts = []
        for key, label in METRICS.items():
            names = [r.name for i in range(rounds) if (r := round_reference(refs, i, key))]
            counts = " + ".join(f"{n} {names.count(n)}/{rounds}" for n in dict.fromkeys(names))
            parts.append(f"{label}: {counts}")
        out.append(f"- reference ({p.model}, {p.interpreter}), rounds it was the lower: " + "; ".join(parts))
    return out


def goals(variants: list[Variant], model_sizes: dict[str, int]) -> list[str]:
    """Issue 6's goals for the default backend and target, checked against this run; every backend's
    warm start and the face-sized model's memory (issue 5); arm64's size and memory without QEMU. The
    ratios are to the faster plain script of each round (issue 18), when the run has two."""
    out = []
    plain = "the faster plain script" if robust(variants) else "plain"
    for v in variants:
        if v.kind != "edgebundle" or v.error or v.size_bytes is None or not v.samples:
            continue
        size_ok = (v.size_bytes - model_sizes[v.model]) <= 12e6
        s = summary(v, references(v, variants))
        if v.device == "qemu":
            out.append(f"- {'met' if size_ok else 'NOT met'}: size <= 12 MB + model ({v.model}, {v.name})")
            if v.model == "face" and "guest_rss_bytes" in s:
                ok = s["guest_rss_bytes"] <= 40e6
                out.append(f"- {'met' if ok else 'NOT met'}: peak RSS without QEMU <= 40 MB (face, {v.name})")
            continue
        r = s["ratio"]
        if v.name == "edgebundle x86_64 nuitka":  # the default target with the other backend
            other = [
                (True, f"warm start <= 1.25x {plain} (every backend)", r["warm_ms"] <= 1.25),
                (v.model == "face", "peak RSS <= 40 MB (face-detector-sized)", s["peak_rss_bytes"] <= 40e6),
            ]
            out += [
                f"- {'met' if ok else 'NOT met'}: {name} ({v.model}, {v.name})" for a, name, ok in other if a
            ]
            continue
        if v.name != "edgebundle x86_64":  # other targets (LiteRT): measured, no goals
            continue
        checks = [
            (True, "size <= 12 MB + model", size_ok),
            (True, f"warm start <= 1.0x {plain}", r["warm_ms"] <= 1.0),
            (True, f"cold start <= 2x {plain}", r["cold_ms"] <= 2.0),
            (v.model == "face", "peak RSS <= 40 MB (face-detector-sized)", s["peak_rss_bytes"] <= 40e6),
            (v.model != "digits", f"latency within 5% of {plain}", r["latency_ms"] <= 1.05),
            (bool(v.runner_cached), "model swap rebuild <= 5 s", (v.build_s or 99) <= 5),
        ]
        for applies, name, ok in checks:
            if applies:
                out.append(f"- {'met' if ok else 'NOT met'}: {name} ({v.model}, {v.name})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="warm starts and inferences per round")
    parser.add_argument("--rounds", type=int, default=3, help="times every variant is measured, in turn")
    parser.add_argument("--models", default="digits,face,mobilenet_v2")
    parser.add_argument("--targets", default="x86_64,x86_64-tflite", help="add arm64 for the emulated one")
    parser.add_argument("--backends", default="pyinstaller", help="pyinstaller,nuitka for both")
    parser.add_argument("--tf-python", default=os.environ.get("EDGEBUNDLE_TF_PYTHON", TF_PYTHON))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--chart", type=Path, default=CHART, help="where the SVG chart goes")
    parser.add_argument("--rerender", type=Path, metavar="COMPARE.JSON", help="only rewrite the results")
    args = parser.parse_args()
    if args.rerender:
        rerender(args.rerender, args.chart)
        return

    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="edgebundle-compare-"))
    bins = scratch / "bin"
    bins.mkdir()
    try:
        chosen = models(args.models.split(","), args.tf_python)
        variants: list[Variant] = []
        model_sizes = {m.name: m.path.stat().st_size for m in chosen}
        targets = args.targets.split(",")
        # A litert target's ratios are to x86_64-tflite's plain scripts, made from its binary.
        targets = [*dict.fromkeys([*(reference_target(t) for t in targets), *targets])]
        backends = args.backends.split(",")
        host = load_target("x86_64").arch
        # Nuitka compiles C natively only (plan.check_native_only): no emulated Nuitka builds.
        builds = [
            (t, b) for t in targets for b in backends if b == "pyinstaller" or load_target(t).arch == host
        ]
        for m in chosen:
            say(f"building {m.name}")
            start = len(variants)
            ours = []
            for target, backend in builds:
                name = f"edgebundle {target}" + ("" if backend == "pyinstaller" else f" {backend}")
                v = Variant(m.name, name, "edgebundle", load_target(reference_target(target)).interpreter)
                try:
                    v.binary, v.build_s, v.runner_cached = edgebundle_build(m, target, backend, bins)
                    v.size_bytes = v.binary.stat().st_size
                    if load_target(target).arch != load_target("x86_64").arch:
                        v.device = "qemu"
                        v.env = _qemu_env(target)
                except RuntimeError as exc:
                    v.error = f"not built: {exc}"
                ours.append(v)
            # a plain script (and, for the default interpreter, a hand-made onefile) per interpreter
            native = [
                (t, v) for (t, _), v in zip(builds, ours, strict=True) if v.binary and v.device == "local"
            ]
            for target, v in native:
                if reference_target(target) != target:
                    continue  # its plain scripts are the reference target's
                if any(p.kind == "plain" and p.interpreter == v.interpreter for p in variants[start:]):
                    continue
                assert v.binary is not None
                venv = baseline_venv(target)
                app = app_dir(v.binary, m, scratch, v.interpreter)
                plain = Variant(m.name, "runtime as script", "plain", v.interpreter, app=app)
                plain.python = str(venv / "bin" / "python")
                variants.append(plain)
                hand = Variant(m.name, "hand-written script", "handwritten", v.interpreter)
                hand.python = plain.python
                try:
                    hand.app = hand_dir(v.binary, m, scratch, v.interpreter)
                    check_same_work(hand, v.binary, scratch)
                except handwritten.Unsupported as exc:
                    hand.error = f"not generated: {exc}"
                variants.append(hand)
                if v.interpreter == "tflite-runtime":
                    onefile = Variant(m.name, "pyinstaller --onefile", "onefile")
                    onefile.binary, onefile.build_s = hand_onefile(venv, app, m, bins)
                    onefile.size_bytes = onefile.binary.stat().st_size
                    variants.append(onefile)
            variants += ours
        for r in range(1, args.rounds + 1):
            for v in variants:
                if v.error:
                    continue
                say(f"round {r}/{args.rounds}: {v.model}, {v.name}")
                try:
                    measure = measure_plain if v.kind in PLAIN_KINDS else measure_binary
                    v.samples.append(measure(v, args.runs, scratch))
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    v.error = f"not measured: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    machine = f"{os.uname().machine}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    write_results(args.out, variants, model_sizes, machine, args.runs, args.rounds, args.chart)


def write_results(
    out: Path,
    variants: list[Variant],
    model_sizes: dict[str, int],
    machine: str,
    runs: int,
    rounds: int,
    chart_path: Path,
) -> None:
    """compare.md (the table and the goals), compare.json (everything, samples included) and the chart
    (last: a missing matplotlib must not cost the measurements)."""
    md = table(variants, model_sizes)
    met = goals(variants, model_sizes)
    if robust(variants):
        to = (
            "to the faster of the two plain scripts of the same model and interpreter in each round, per "
            "measure (RSS: the smaller): edgebundle's runtime run as `python main.py` and a hand-written "
            "script doing the same inference (benchmarks/handwritten.py); the runtime-as-script row is "
            "kept for information, the notes below the table say which script each ratio used"
        )
        notes = "\n".join(reference_notes(variants)) + "\n\n"
    else:
        to, notes = "to the plain script of the same model and interpreter", ""
    text = (
        f"Measured by `benchmarks/compare.py --runs {runs} --rounds {rounds}` ({machine}); medians "
        f"of {rounds} rounds. Ratios (medians of per-round ratios) are {to}; emulated (QEMU) rows have "
        f"none.\n\n{md}\n\n{notes}" + "\n".join(met) + "\n"
    )
    (out / "compare.md").write_text(text)
    data = {
        "machine": machine,
        "runs": runs,
        "rounds": rounds,
        "model_sizes": model_sizes,
        "variants": [
            {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(x).items()},
                "summary": summary(x, references(x, variants)),
            }
            for x in variants
        ],
        "goals": met,
    }
    (out / "compare.json").write_text(json.dumps(data, indent=1) + "\n")
    print(text)
    chart(data, chart_path)
    say(f"wrote {out / 'compare.md'}, {out / 'compare.json'} and {chart_path}")


def rerender(path: Path, chart_path: Path = CHART) -> None:
    """compare.md, compare.json and the chart again from a compare.json, measuring nothing (after a
    change to the table, the goals or the chart)."""
    data = json.loads(path.read_text())
    fields = {f for f in Variant.__dataclass_fields__}
    variants = []
    for raw in data["variants"]:
        v = Variant(**{k: raw[k] for k in fields if k in raw})
        v.binary = Path(raw["binary"]) if raw.get("binary") else None
        v.app = Path(raw["app"]) if raw.get("app") else None
        variants.append(v)
    write_results(
        path.parent, variants, data["model_sizes"], data["machine"], data["runs"], data["rounds"], chart_path
    )


# ---------------------------------------------------------------------------- chart

# Rows of the chart, top to bottom: the baselines first (the plain scripts, the onefile), then
# edgebundle's variants.
_CHART_ORDER = ("plain", "handwritten", "onefile", "edgebundle")
_CHART_PANELS = (
    ("size MB (binary, model included)", "size"),
    ("warm start ms (exec to exit, one inference)", "warm"),
    ("peak RSS MB (whole process tree)", "rss"),
)


def _chart_rows(data: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    """Row labels, models, and the summary of each (row, model) from a compare.json."""
    rows: list[str] = []
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    models_seen: list[str] = []
    ranked = sorted(data["variants"], key=lambda v: _CHART_ORDER.index(v["kind"]))
    for v in ranked:
        if v.get("error") or not v.get("summary"):
            continue
        label = v["name"]
        if v["kind"] in PLAIN_KINDS:
            label += f" ({v['interpreter']})"
        if v["device"] == "qemu":
            label += " (QEMU)"
        if label not in rows:
            rows.append(label)
        if v["model"] not in models_seen:
            models_seen.append(v["model"])
        cells[label, v["model"]] = {**v["summary"], "size_bytes": v["size_bytes"], "device": v["device"]}
    return rows, models_seen, cells


def chart(data: dict[str, Any], path: Path) -> None:
    """The table as an SVG: size, warm start and peak RSS of every variant, a bar per model. Emulated
    (QEMU) rows show their size and the memory estimate without QEMU, not their times. Deterministic:
    a fixed hash salt for the SVG's ids, no date, text kept as text."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            f"compare: {path} not written: the chart needs matplotlib (pip install -e '.[dev]')"
        ) from None
    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    rows, model_names, cells = _chart_rows(data)
    style = {
        "svg.hashsalt": "edgebundle-compare",
        "svg.fonttype": "none",
        "font.family": "DejaVu Sans",
        "font.size": 9,
    }
    with plt.rc_context(style):
        fig, axes = plt.subplots(1, 3, figsize=(13, 0.62 * len(rows) + 1.4), sharey=True)
        height = 0.8 / max(len(model_names), 1)
        colors = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")
        for ax, (title, key) in zip(axes, _CHART_PANELS, strict=True):
            ax.set_title(title, fontsize=9.5, loc="left")
            top = 0.0
            for m, model in enumerate(model_names):
                for r, row in enumerate(rows):
                    cell = cells.get((row, model))
                    if cell is None:
                        continue
                    y = r - 0.4 + height * (m + 0.5)
                    value, note, hatch = _chart_value(cell, key)
                    if value is None:  # one note per row, not one per model
                        if m == 0:
                            ax.text(0, r, f" {note}", va="center", fontsize=7.5, color="#666666")
                        continue
                    ax.barh(y, value, height * 0.92, color=colors[m % len(colors)], hatch=hatch)
                    shown = f"{value:.0f}" if key == "warm" else f"{value:.1f}"
                    ax.text(value, y, f" {shown}{note}", va="center", fontsize=7)
                    top = max(top, value)
            ax.set_xlim(0, top * 1.3 or 1)
            ax.grid(axis="x", color="#dddddd", linewidth=0.6)
            ax.set_axisbelow(True)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        axes[0].set_yticks(range(len(rows)), rows)
        axes[0].invert_yaxis()
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=colors[m % len(colors)]) for m in range(len(model_names))
        ]
        fig.legend(handles, model_names, loc="lower right", ncol=len(model_names), frameon=False)
        fig.text(
            0.01,
            0.01,
            f"benchmarks/compare.py, {data['machine']}: medians of {data['rounds']} rounds; lower is "
            "better. QEMU rows run emulated on x86_64: no times, memory estimated without the emulator.",
            fontsize=7.5,
            color="#444444",
        )
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="svg", metadata={"Date": None})
        plt.close(fig)


def _chart_value(cell: dict[str, Any], key: str) -> tuple[float | None, str, str | None]:
    """A bar's value (None: no bar), the text after it, and its hatch."""
    if key == "size":
        size = cell["size_bytes"]
        return (None, "a script in a venv: no single file", None) if size is None else (size / 1e6, "", None)
    if key == "warm":
        return (
            (None, "emulated: not comparable", None)
            if cell["device"] == "qemu"
            else (cell["warm_ms"], "", None)
        )
    if cell.get("guest_rss_bytes") is not None:
        return cell["guest_rss_bytes"] / 1e6, " (without QEMU)", "//"
    return cell["peak_rss_bytes"] / 1e6, "", None


def _qemu_env(target: str) -> dict[str, str]:
    """Where a foreign-arch binary finds glibc under QEMU: the build root's libraries."""
    from edgebundle.buildenv import for_plan
    from edgebundle.plan import make_plan
    from edgebundle.recipe import load_recipe

    plan = make_plan(
        model=ROOT / "tests/fixtures/models/digits_float.tflite",
        recipe=load_recipe("digits"),
        target=load_target(target),
        backend="pyinstaller",
        output=Path(tempfile.gettempdir()) / "unused",
    )
    root = for_plan(plan).library_root
    return {"QEMU_LD_PREFIX": str(root)} if root else {}


if __name__ == "__main__":
    main()
