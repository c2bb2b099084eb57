"""Warm start of binaries against the hand-written plain script, interleaved: each round runs every
variant once in turn (so that the machine's load at any moment falls on all of them alike), and the
median over the rounds is each variant's warm start; ratios are to the (first) plain script's median.

    .venv/bin/python benchmarks/warm_interleaved.py NAME=BINARY... --python PLAIN_PYTHON \\
        [--script-from BINARY] [--runs 25]

The plain script is benchmarks/handwritten.py's for the manifest of ``--script-from`` (default: the
first binary; its interpreter module is the script's), run as ``PLAIN_PYTHON script.py IMAGE`` on the
model's self-test image, with its .pyc files compiled by a first run. A binary is timed two ways: the
same work (``BINARY IMAGE``) and ``BINARY --self-test`` (what ``edgebundle test`` times), each once
unpacked by a first run (warm: its runner is in the cache, a cache per binary). Wall time from spawn to exit.

``--cold``: first runs instead, the issue's "first run after copying": every run of a binary is a
fresh copy of it with an empty cache (its runner unpacked by that run), every run of the plain script
a fresh copy of its folder (its script not yet compiled; the interpreter's packages as installed).
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
sys.path.insert(0, str(ROOT / "benchmarks"))

import handwritten  # noqa: E402

from edgebundle.backends import bundle  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="+", metavar="NAME=BINARY")
    parser.add_argument(
        "--python", required=True, help="the plain script's Python (its interpreter installed)"
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="MODULE=PYTHON",
        help="another plain script: the same with interpreter module MODULE, run by PYTHON",
    )
    parser.add_argument("--script-from", type=Path, help="the binary whose manifest the script is made for")
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--cold", action="store_true", help="first runs after a copy, with empty caches")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    binaries = {name: Path(path).resolve() for name, _, path in (v.partition("=") for v in args.variants)}
    scratch = Path(tempfile.mkdtemp(prefix="warm-"))
    files = bundle.read_app_files(args.script_from or next(iter(binaries.values())))
    manifest = json.loads(files["manifest.json"])
    image = manifest["selftest"]["image"]
    app = scratch / "hand"
    app.mkdir()
    (app / "script.py").write_text(handwritten.script(manifest))
    for n, (module, _, _) in enumerate(a.partition("=") for a in args.also):
        other = {**manifest, "interpreter": {**manifest["interpreter"], "module": module}}
        (app / f"script{n}.py").write_text(handwritten.script(other))
    for name in (manifest["model"]["file"], image):
        (app / name).write_bytes(files[name])
    # A HOME per binary: the launcher keeps only its few newest runners per cache (launcher.c), and
    # three binaries in one cache would unpack each other's away (every start a cold one).
    commands = {
        f"plain script ({manifest['interpreter']['module']})": ([args.python, "script.py", image], "plain")
    }
    for n, (module, _, python) in enumerate(a.partition("=") for a in args.also):
        commands[f"plain script ({module})"] = ([python, f"script{n}.py", image], "plain")
    for name, binary in binaries.items():
        commands[f"{name} IMAGE"] = ([str(binary), image], name)
        commands[f"{name} --self-test"] = ([str(binary), "--self-test"], name)
    answers = {}
    for name, (argv, home) in commands.items():  # the first runs: .pyc files written, runners unpacked
        env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch / f"home-{home}")}
        proc = subprocess.run(argv, cwd=app, env=env, capture_output=True, text=True, check=True)
        if "IMAGE" in name or name.startswith("plain"):
            answers[name] = proc.stdout
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, (command, home) in commands.items():
            env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch / f"home-{home}")}
            argv, cwd = command, app
            if args.cold:
                argv, cwd, env["HOME"] = _fresh_copy(command, app, scratch / "cold", home)
            start = time.perf_counter()
            subprocess.run(
                argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
            )
            times[name].append((time.perf_counter() - start) * 1000)
    shutil.rmtree(scratch, ignore_errors=True)
    plain = next(iter(commands))
    reference = statistics.median(times[plain])
    kind = "cold" if args.cold else "warm"
    lines = [
        f"| command ({args.runs} interleaved runs each) | {kind} p50 ms | min ms | / plain script |",
        "|---|---|---|---|",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {min(values):.1f} | {median / reference:.2f}x |")
    table = "\n".join(lines)
    print(table)
    for name, out in answers.items():
        print(f"<!-- {name}: {out.strip()[:160]} -->")
    if args.out:
        args.out.write_text(table + "\n")
    return 0


def _fresh_copy(argv: list[str], app: Path, where: Path, home: str) -> tuple[list[str], Path, str]:
    """A copy of what ``argv`` runs, made now (the binary, or the plain script's folder), and an empty
    HOME: the command, its working directory and HOME for one cold run."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    copy = where / "app"
    shutil.copytree(app, copy, ignore=shutil.ignore_patterns("__pycache__"))
    if home != "plain":  # a binary: copied next to the app, as a user copies one file
        binary = where / Path(argv[0]).name
        shutil.copy2(argv[0], binary)
        argv = [str(binary), *argv[1:]]
    (where / "home").mkdir()
    return argv, copy, str(where / "home")


if __name__ == "__main__":
    sys.exit(main())
