"""Which lean direction reaches issue #18's goals: one run, interleaved rounds, one machine.

    python benchmarks/lean_directions.py [--runs 8] [--rounds 5] [--out benchmarks/results]

Every program does the same work (load the model, open a PNG with Pillow, resize, normalise to
float32, invoke, print the top k as JSON) or one piece of it, in a fresh process:

* (a) ``ref.py`` (benchmarks/lean/), the plain script a user writes: NumPy + Pillow +
  tflite_runtime, with the tflite-runtime build env's Python (NumPy 1.26 without BLAS): THE
  REFERENCE of every ratio; also with the stock wheels (NumPy with OpenBLAS, compare.py's baseline
  venv) and with ai_edge_litert's interpreter (NumPy 2.2);
* (b) the same with ``python -I -S`` (no site, no user paths; frozen modules are on by default in a
  release build), and ``python [-I -S] -c pass``: Python's own initialisation;
* (c) no NumPy: Pillow + LiteRT's C API of ai_edge_litert's libLiteRt.so, through a small CPython
  extension (``lean/_ebcore.c``, built here with gcc; preprocessing and dequantisation in C) or
  through ctypes (``lean/lean_ctypes.py``, preprocessing with array/memoryview); with and without
  importing only Pillow's PNG plugin;
* (d) Pillow alone: ``import PIL.Image``; opening a PNG (Image.open's preinit imports the BMP, GIF,
  JPEG, PPM and PNG plugins); opening it with only PngImagePlugin;
* (e) ``import numpy`` (the env's 1.26 without BLAS, the stock 1.26 with OpenBLAS, 2.2.6),
  ``import tflite_runtime.interpreter``, ``import ai_edge_litert.interpreter``, ``import _ebcore``.

Wall time is exec to exit (fork to wait4, in lean/spawnrss.c), warm: each round runs a program once
unmeasured,
then --runs times; peak RSS is the child's ru_maxrss from wait4. Programs are measured in turn,
--rounds times, and the medians of all samples kept, so the noise of a shared machine hits them
alike: compare ratios of one run, not absolute times. An in-process probe times the imports and each
shared library _imaging pulls in (dlopen in a fresh process), and the outputs of (c) are checked
against tflite_runtime's on the same input (max abs diff) for several fixture models. Sizes: what
would ship for (c) (libLiteRt.so stripped, _ebcore, zstd -19) against tflite_runtime's .so and
NumPy's files, and against the built binary's components (``edgebundle inspect``, if --binary
exists). Writes OUT/lean-directions.json and prints the table; the analysis is
benchmarks/results/lean-directions.md.

Needs the build envs of ``edgebundle build`` (~/.cache/edgebundle/envs/, tflite-runtime and
ai-edge-litert, PyInstaller, Python 3.11), gcc and zstd; the face-detector-sized model and the
stock-wheel venv of compare.py (cache_dir()/bench) if present.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEAN = ROOT / "benchmarks" / "lean"
CACHE = Path(os.environ.get("EDGEBUNDLE_CACHE", Path.home() / ".cache" / "edgebundle"))
DIGITS = ROOT / "tests/fixtures/models/digits_float.tflite"
DIGITS_PNG = ROOT / "tests/fixtures/digits/sample_0.png"
RGB_PNG = ROOT / "tests/fixtures/images/rgba.png"
FACE_NORM = ["RGB", "127.5,127.5,127.5", "127.5,127.5,127.5"]


def say(text: str) -> None:
    print(f"lean: {text}", file=sys.stderr, flush=True)


def one(pattern: str) -> Path | None:
    found = sorted(glob.glob(pattern))
    return Path(found[-1]) if found else None


def site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


# ---------------------------------------------------------------------------- building (c)


def build_ebcore(litert_env: Path, work: Path) -> Path:
    """libLiteRt.so stripped next to _ebcore.<abi>.so (rpath $ORIGIN), in work/ext."""
    out = work / "ext"
    out.mkdir(parents=True, exist_ok=True)
    lib = site_packages(litert_env) / "ai_edge_litert" / "libLiteRt.so"
    subprocess.run(["strip", "-o", str(out / "libLiteRt.so"), str(lib)], check=True)
    python = litert_env / "bin" / "python"
    include, suffix = subprocess.run(
        [
            str(python),
            "-c",
            "import sysconfig as s; print(s.get_paths()['include']); print(s.get_config_var('EXT_SUFFIX'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    ext = out / f"_ebcore{suffix}"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-shared",
            "-fPIC",
            "-Wall",
            "-I",
            include,
            str(LEAN / "_ebcore.c"),
            "-o",
            str(ext),
            "-L",
            str(out),
            "-lLiteRt",
            "-Wl,-rpath,$ORIGIN",
            "-s",
        ],
        check=True,
    )
    subprocess.run(["gcc", "-O2", "-o", str(work / "spawnrss"), str(LEAN / "spawnrss.c")], check=True)
    return out


# ---------------------------------------------------------------------------- measuring


def spawn(helper: Path, argv: list[str], runs: int) -> list[tuple[float, float, int]]:
    """(wall ms, peak RSS MiB, exit status) of each of `runs` runs in turn, exec to exit, through the
    small C parent lean/spawnrss.c (a Python parent's own RSS would be counted in the child's
    ru_maxrss)."""
    out = subprocess.run([str(helper), str(runs), *argv], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return [(float(ms), int(kib) / 1024, int(rc)) for ms, kib, rc in rows]


def measure(helper: Path, programs: dict[str, list[str]], runs: int, rounds: int) -> dict[str, dict]:
    samples: dict[str, dict[str, list[float]]] = {n: {"ms": [], "rss": []} for n in programs}
    names = list(programs)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # a different program first each round
        say(f"round {r + 1}/{rounds}")
        for name in order:
            argv = programs[name]
            got = spawn(helper, argv, runs + 1)  # the first run warms the page cache: not kept
            if any(rc != 0 for _, _, rc in got):
                raise SystemExit(f"{name} failed: {' '.join(argv)}")
            for ms, rss, _ in got[1:]:
                samples[name]["ms"].append(ms)
                samples[name]["rss"].append(rss)
    return {
        n: {"ms": statistics.median(s["ms"]), "rss_mib": statistics.median(s["rss"]), "n": len(s["ms"])}
        for n, s in samples.items()
    }


PROBE = r"""
import sys, time, importlib, json
what = sys.argv[1]
t0 = time.perf_counter()
if what == "dlopen":
    import ctypes
    t0 = time.perf_counter()
    ctypes.CDLL(sys.argv[2])
elif what == "png-open":
    from PIL import Image
    t0 = time.perf_counter()
    Image.open(sys.argv[2]).load()
elif what == "png-open-only":
    from PIL import Image
    t0 = time.perf_counter()
    from PIL import PngImagePlugin
    Image._initialized = 1
    Image.open(sys.argv[2]).load()
else:
    importlib.import_module(what)
print(json.dumps((time.perf_counter() - t0) * 1000))
"""


def probe(probes: dict[str, list[str]], runs: int, rounds: int, libs: str) -> dict[str, float]:
    """In-process milliseconds of one step in a fresh process, median over rounds x runs. A library
    of pillow.libs finds its own dependencies through _imaging's RPATH only: dlopen'd alone, it gets
    LD_LIBRARY_PATH=libs."""
    got: dict[str, list[float]] = {n: [] for n in probes}
    env = {**os.environ, "LD_LIBRARY_PATH": libs}
    for _ in range(rounds):
        for name, argv in probes.items():
            for _ in range(runs):
                out = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env if "pillow.libs/" in name else None,
                ).stdout
                got[name].append(json.loads(out.strip().splitlines()[-1]))
    return {n: statistics.median(v) for n, v in got.items()}


# ---------------------------------------------------------------------------- checking (c)


def dump(argv: list[str]) -> list[list[float]]:
    out = subprocess.run([*argv, "--dump"], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def max_diff(a: list[list[float]], b: list[list[float]]) -> float | None:
    if sorted(len(x) for x in a) != sorted(len(x) for x in b):
        return None
    # outputs in signature order (LiteRT) vs the subgraph's (tflite_runtime): pair by size, then order
    a2, b2 = sorted(a, key=len), sorted(b, key=len)
    pairs = (zip(x, y, strict=True) for x, y in zip(a2, b2, strict=True))
    return max((abs(p - q) for pair in pairs for p, q in pair), default=0.0)


# ---------------------------------------------------------------------------- sizes


def zstd_size(data: bytes) -> int:
    return len(
        subprocess.run(["zstd", "-19", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    )


def tree_bytes(root: Path, skip: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root.parent).as_posix()
            if p.is_file() and not any(s in rel for s in skip):
                tar.add(p, arcname=rel)
    return buf.getvalue()


def sizes(tflite_env: Path, litert_env: Path, ext: Path, binary: Path | None) -> dict:
    tsp, lsp = site_packages(tflite_env), site_packages(litert_env)
    files = {
        "libLiteRt.so (stripped)": ext / "libLiteRt.so",
        "_ebcore (stripped)": next(ext.glob("_ebcore*.so")),
        "tflite_runtime _pywrap .so": next(
            (tsp / "tflite_runtime").glob("_pywrap_tensorflow_interpreter_wrapper*.so")
        ),
    }
    out: dict[str, dict[str, int]] = {}
    for name, p in files.items():
        data = p.read_bytes()
        out[name] = {"raw": len(data), "zstd19": zstd_size(data)}
    skip = (
        "/tests/",
        "/testing/",
        ".pyi",
        "/f2py/",
        "/distutils/",
        "/_pyinstaller/",
        "/typing/",
        "__pycache__",
    )
    for name, root in (
        ("numpy 1.26 (tflite env, no BLAS; less tests, f2py, stubs)", tsp / "numpy"),
        ("numpy 2.2.6 (litert env; same)", lsp / "numpy"),
    ):
        data = tree_bytes(root, skip)
        out[name] = {"raw": len(data), "zstd19": zstd_size(data)}
    libstdcxx = Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
    if libstdcxx.exists():
        data = libstdcxx.resolve().read_bytes()
        out["libstdc++.so.6 (host; both interpreters need it)"] = {
            "raw": len(data),
            "zstd19": zstd_size(data),
        }
    # Pillow: _imaging's own NEEDED libraries from pillow.libs
    imaging = next((tsp / "PIL").glob("_imaging.cpython*.so"))
    needed = subprocess.run(
        ["readelf", "-d", str(imaging)], capture_output=True, text=True, check=True
    ).stdout
    for line in needed.splitlines():
        if "NEEDED" in line:
            lib = line.split("[", 1)[1].rstrip("]")
            p = tsp / "pillow.libs" / lib
            if p.exists():
                data = p.read_bytes()
                out[f"pillow.libs/{lib}"] = {"raw": len(data), "zstd19": zstd_size(data)}
    data = imaging.read_bytes()
    out["PIL/_imaging .so"] = {"raw": len(data), "zstd19": zstd_size(data)}
    inspect = None
    if binary and binary.exists():
        text = subprocess.run(
            [sys.executable, "-m", "edgebundle", "inspect", str(binary)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,  # a binary it cannot read: no inspect section
        ).stdout
        inspect = {"text": text}
    return {"files": out, "inspect": inspect}


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--tflite-env", type=Path, default=one(str(CACHE / "envs/tflite-runtime-pyinstaller-py3.11-*[!g]"))
    )
    parser.add_argument(
        "--litert-env", type=Path, default=one(str(CACHE / "envs/ai-edge-litert-pyinstaller-py3.11-*[!g]"))
    )
    parser.add_argument(
        "--stock-venv", type=Path, default=one(str(CACHE / "bench/baseline-venv-tflite-runtime-*"))
    )
    parser.add_argument("--face-model", type=Path, default=one(str(CACHE / "bench/face.tflite-*")))
    parser.add_argument("--binary", type=Path, default=ROOT / "dist" / "digits")
    parser.add_argument(
        "--arm64-root",
        type=Path,
        help="an arm64 Debian root with python3.11 and Pillow "
        "(e.g. edgebundle's roots/arm64-*/rootfs): check the ctypes path under qemu-aarch64-static",
    )
    parser.add_argument("--arm64-litert", type=Path, help="libLiteRt.so of the aarch64 ai-edge-litert wheel")
    parser.add_argument("--checks-only", action="store_true", help="only the output checks, no timing")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lean-"))
    try:
        ext = build_ebcore(args.litert_env, work)
        tpy = str(args.tflite_env / "bin" / "python")
        lpy = str(args.litert_env / "bin" / "python")
        tsp = str(site_packages(args.tflite_env))
        lsp = str(site_packages(args.litert_env))
        lean_sp = f"{tsp},{ext}"  # Pillow from the tflite env (the same 11.3 wheel), _ebcore + libLiteRt.so
        lib = str(ext / "libLiteRt.so")
        digits = [str(DIGITS), str(DIGITS_PNG), "L", "0", "255", "3"]
        face = [str(args.face_model), str(RGB_PNG), *FACE_NORM, "3"] if args.face_model else None
        ref, lext, lct = str(LEAN / "ref.py"), str(LEAN / "lean_ext.py"), str(LEAN / "lean_ctypes.py")
        isp = [tpy, "-I", "-S"]

        # correctness first: (c) against tflite_runtime on the same input
        check_models = [("digits_float", digits)]
        for m in ("digits_int8", "digits_uint8"):
            check_models.append((m, [str(ROOT / f"tests/fixtures/models/{m}.tflite"), *digits[1:]]))
        if face:
            check_models.append(("face (128x128 RGB, dynamic batch)", face))
        check_models.append(
            (
                "det_ssd (2 outputs)",
                [str(ROOT / "tests/fixtures/models/det_ssd.tflite"), str(RGB_PNG), *FACE_NORM, "3"],
            )
        )
        checks = {}
        for name, a in check_models:
            want = dump([tpy, ref, *a])
            row = {"ext": max_diff(want, dump([*isp, lext, "--sp", lean_sp, *a]))}
            if "int8" not in name and "uint8" not in name:
                row["ctypes"] = max_diff(want, dump([*isp, lct, "--sp", tsp, lib, *a]))
            if args.arm64_root and args.arm64_litert and "int8" not in name and "uint8" not in name:
                root = args.arm64_root
                arm_sp = next(root.glob("opt/edgebundle/venv/lib/python3*/site-packages"))
                row["ctypes arm64 (qemu)"] = max_diff(
                    want,
                    dump(
                        [
                            "/usr/bin/qemu-aarch64-static",
                            "-L",
                            str(root),
                            str(root / "usr/bin/python3.11"),
                            "-I",
                            "-S",
                            lct,
                            "--sp",
                            str(arm_sp),
                            str(args.arm64_litert),
                            *a,
                        ]
                    ),
                )
            checks[name] = row
            say(f"check {name}: max abs diff {row}")
        if args.checks_only:
            print(json.dumps(checks, indent=1))
            return

        open_png = f"Image.open({str(DIGITS_PNG)!r}).load()"
        programs: dict[str, list[str]] = {
            "a: plain script (tflite env: NumPy 1.26 no BLAS) REFERENCE": [tpy, ref, *digits],
            "b: plain script, python -I -S": [*isp, ref, "--sp", tsp, *digits],
            "c: Pillow + _ebcore (C ext), -I -S": [*isp, lext, "--sp", lean_sp, *digits],
            "c: Pillow(PNG only) + _ebcore, -I -S": [*isp, lext, "--sp", lean_sp, "--png-only", *digits],
            "c: Pillow + ctypes LiteRT, -I -S": [*isp, lct, "--sp", tsp, lib, *digits],
            "b: python -c pass": [tpy, "-c", "pass"],
            "b: python -I -S -c pass": [*isp, "-c", "pass"],
            "d: import PIL.Image": [*isp, "-c", f"import sys; sys.path.insert(0, {tsp!r}); import PIL.Image"],
            "d: PIL open+load PNG (preinit: 5 plugins)": [
                *isp,
                "-c",
                f"import sys; sys.path.insert(0, {tsp!r}); from PIL import Image; {open_png}",
            ],
            "d: PIL open+load PNG (PngImagePlugin only)": [
                *isp,
                "-c",
                f"import sys; sys.path.insert(0, {tsp!r}); from PIL import Image, PngImagePlugin; "
                f"Image._initialized = 1; {open_png}",
            ],
            "e: import numpy 1.26 (no BLAS)": [
                *isp,
                "-c",
                f"import sys; sys.path.insert(0, {tsp!r}); import numpy",
            ],
            "e: import numpy 2.2.6 (litert env)": [
                lpy,
                "-I",
                "-S",
                "-c",
                f"import sys; sys.path.insert(0, {lsp!r}); import numpy",
            ],
            "e: import tflite_runtime.interpreter": [
                *isp,
                "-c",
                f"import sys; sys.path.insert(0, {tsp!r}); import tflite_runtime.interpreter",
            ],
            "e: import ai_edge_litert.interpreter": [
                lpy,
                "-I",
                "-S",
                "-c",
                f"import sys; sys.path.insert(0, {lsp!r}); import ai_edge_litert.interpreter",
            ],
            "e: import _ebcore (dlopen libLiteRt.so)": [
                *isp,
                "-c",
                f"import sys; sys.path.insert(0, {str(ext)!r}); import _ebcore",
            ],
            "a: plain script, ai_edge_litert (NumPy 2.2.6)": [lpy, ref, *digits],
        }
        if args.stock_venv:
            spy = str(args.stock_venv / "bin" / "python")
            ssp = str(site_packages(args.stock_venv))
            programs["a: plain script, stock wheels (NumPy+OpenBLAS)"] = [spy, ref, *digits]
            programs["e: import numpy 1.26 stock (OpenBLAS)"] = [
                spy,
                "-I",
                "-S",
                "-c",
                f"import sys; sys.path.insert(0, {ssp!r}); import numpy",
            ]
        if face:
            programs["a: plain script, face model"] = [tpy, ref, *face]
            programs["c: Pillow + _ebcore, face model, -I -S"] = [*isp, lext, "--sp", lean_sp, *face]
            programs["c: Pillow + ctypes LiteRT, face model, -I -S"] = [*isp, lct, "--sp", tsp, lib, *face]
        results = measure(work / "spawnrss", programs, args.runs, args.rounds)

        # in-process: one step, fresh process
        def pr(*a: str, py: str = tpy, sp: str = tsp) -> list[str]:
            return [py, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {sp!r}); " + PROBE, *a]

        probes = {
            "import numpy (1.26 no BLAS)": pr("numpy"),
            "import PIL.Image": pr("PIL.Image"),
            "import PIL._imaging": pr("PIL._imaging"),
            "Image.open+load PNG after import (preinit)": pr("png-open", str(DIGITS_PNG)),
            "Image.open+load PNG after import (PNG plugin only)": pr("png-open-only", str(DIGITS_PNG)),
            "import tflite_runtime.interpreter (incl. numpy)": pr("tflite_runtime.interpreter"),
            "import _ebcore (incl. libLiteRt.so)": pr("_ebcore", sp=str(ext)),
            "dlopen libLiteRt.so": pr("dlopen", lib),
            "dlopen tflite_runtime _pywrap .so": pr(
                "dlopen", str(next((Path(tsp) / "tflite_runtime").glob("_pywrap*.so")))
            ),
        }
        for libname in sorted((Path(tsp) / "pillow.libs").iterdir()):
            if any(k in libname.name for k in ("tiff", "openjp2", "xcb", "lzma", "jpeg", "Xau")):
                probes[f"dlopen pillow.libs/{libname.name}"] = pr("dlopen", str(libname))
        probes["dlopen PIL/_imaging .so (all its libraries)"] = pr(
            "dlopen", str(next((Path(tsp) / "PIL").glob("_imaging.cpython*.so")))
        )
        inproc = probe(probes, max(2, args.runs // 2), args.rounds, str(Path(tsp) / "pillow.libs"))
        size = sizes(args.tflite_env, args.litert_env, ext, args.binary)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref_name = next(n for n in results if n.endswith("REFERENCE"))
    ref_ms = results[ref_name]["ms"]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "host": os.uname().machine,
        "python": sysconfig.get_python_version(),
        "runs": args.runs,
        "rounds": args.rounds,
        "programs": {n: {**r, "ratio": r["ms"] / ref_ms} for n, r in results.items()},
        "in_process_ms": inproc,
        "checks_max_abs_diff": checks,
        "sizes": size,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lean-directions.json").write_text(json.dumps(report, indent=1) + "\n")
    print("| program | warm ms (median) | ratio to (a) | peak RSS MiB |\n|---|---|---|---|")
    for n, r in report["programs"].items():
        print(f"| {n} | {r['ms']:.1f} | {r['ratio']:.2f} | {r['rss_mib']:.1f} |")
    print("\nin-process ms (fresh process, median):")
    for n, v in inproc.items():
        print(f"  {n}: {v:.2f}")
    print("\ncorrectness (max abs diff vs tflite_runtime):", json.dumps(checks))
    print("\nsizes (bytes):")
    for n, v in size["files"].items():
        print(f"  {n}: raw {v['raw']:,} zstd-19 {v['zstd19']:,}")
    if size["inspect"]:
        print(size["inspect"]["text"])


if __name__ == "__main__":
    main()
