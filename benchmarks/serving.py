"""``--serve`` side by side, in one run (``loadtest.py --old OLD`` runs it too):

    .venv/bin/python benchmarks/serving.py --old OLD_DIGITS --new NEW_DIGITS \\
        [--det-old OLD_DET --det-new NEW_DET --det-model tests/fixtures/models/det_ssd.tflite]

1. The digits model at concurrency 32 (keep-alive connections): the old and the new binary, both
   started with their default workers, loaded in alternating rounds (so that whatever else the
   machine does weighs on both alike); the median req/s of each and the ratio, the servers' CPU per
   request, and the memory of the new server's processes (resident, proportional and private: what
   each extra worker process costs is its private memory).
2. A detection binary on a 640x480 PNG at concurrency 8 with its default workers, against the
   in-process bound of the same work: one process per core looping over decode + preprocess +
   invoke + detection decode + JSON (the runtime unfrozen in the build environment's Python),
   measured before and after the load; the old binary too when given.

The client is loadtest.py's (one process, one selector loop); it shares the machine's cores with
the servers, and on a 2-core machine takes about half of one at the digits' rates: ``--client wrk``
drives the digits rounds with wrk (Debian's package; one C thread, the same ten sample images in
turn, ``--seconds`` per round) instead, which leaves the cores to the servers. Prints Markdown.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.loadtest import SAMPLES, cycle, drive, good_requests, post, start_server, tree_cpu_s  # noqa: E402
from edgebundle.runtime.measure import children  # noqa: E402
from edgebundle.target import load_target  # noqa: E402
from edgebundle.toolchains.venv import HostVenv  # noqa: E402

SQUARES = ROOT / "tests" / "fixtures" / "detection" / "squares.png"

PIPELINE_SCRIPT = """
import json, sys, time
from pathlib import Path
from ebrt.session import Session
root, image, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = Session(root, json.loads((root / "manifest.json").read_text()), 1)
data = Path(image).read_bytes()
for _ in range(20):
    json.dumps(s.result(s.infer(s.feeds_for_image(data))[0]))
n, start = 0, time.perf_counter()
while (elapsed := time.perf_counter() - start) < seconds:
    for _ in range(10):
        values, ms = s.infer(s.feeds_for_image(data))
        json.dumps(s.result(values))
    n += 10
print(n / elapsed)
"""


def photo_png(path: Path) -> bytes:
    """squares.png at 640x480 with seeded noise: compresses like a photo (~0.6 MB), not like flat
    colours."""
    import numpy as np
    from PIL import Image

    img = Image.open(SQUARES).convert("RGB").resize((640, 480), Image.BILINEAR)
    noise = np.random.default_rng(7).normal(0, 6, (480, 640, 3))
    pixels = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    path.write_bytes(out.getvalue())
    return out.getvalue()


def pipeline_bound(binary: Path, model: Path, image: Path, seconds: float) -> float:
    """Requests per second of the machine's cores, one process each, no HTTP."""
    manifest = json.loads(subprocess.run([str(binary), "--info"], capture_output=True, check=True).stdout)
    target = load_target(str(ROOT / "targets" / f"{manifest['target']['name']}.toml"))
    python = HostVenv(target, str(manifest["backend"])).python
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp)
        shutil.copytree(
            ROOT / "edgebundle" / "runtime", app / "ebrt", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copyfile(model, app / manifest["model"]["file"])
        (app / "manifest.json").write_text(json.dumps(manifest))
        procs = [
            subprocess.Popen(
                [python, "-c", PIPELINE_SCRIPT, str(app), str(image), str(seconds)],
                cwd=app,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(cores)
        ]
        return sum(float(p.communicate()[0]) for p in procs)


def memory_kb(pid: int) -> dict[str, int]:
    """Rss, Pss and private (Private_Clean + Private_Dirty) of one process, kB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[name] = int(rest.split()[0])
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "private": fields["Private_Clean"] + fields["Private_Dirty"],
    }


class Running:
    def __init__(self, binary: Path, tmp: Path, name: str, workers: int | None = None) -> None:
        self.name = name
        self.proc, self.port = start_server(binary, workers, tmp / f"{name}.log")

    def round(self, requests: list[bytes], count: int, concurrency: int) -> tuple[float, float, int]:
        """(req/s, server CPU ms per request, failures)"""
        cpu0 = tree_cpu_s(self.proc.pid)
        out = drive(self.port, cycle(requests, count), concurrency, 300.0)
        ok = out.statuses.get("good", {}).get(200, 0)
        cpu = tree_cpu_s(self.proc.pid) - cpu0
        return ok / out.elapsed, cpu / max(ok, 1) * 1000, count - ok

    def round_wrk(self, script: Path, seconds: float, concurrency: int) -> tuple[float, float, int]:
        """The same with wrk for ``seconds``: (req/s, server CPU ms per request, failures)"""
        cpu0 = tree_cpu_s(self.proc.pid)
        argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", str(script)]
        out = subprocess.run(
            [*argv, f"http://127.0.0.1:{self.port}/v1/infer"], capture_output=True, text=True, check=True
        ).stdout
        cpu = tree_cpu_s(self.proc.pid) - cpu0
        done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
        return rps, cpu / max(done, 1) * 1000, failed

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


WRK_SCRIPT = """
local bodies = {}
for _, path in ipairs({%s}) do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*all")
  f:close()
end
local n = 0
request = function()
  n = n %% #bodies + 1
  return wrk.format("POST", "/v1/infer", {["Content-Type"] = "image/png"}, bodies[n])
end
"""


def wrk_script(tmp: Path) -> Path:
    """A wrk script posting good_requests()'s images in turn."""
    script = tmp / "digits.lua"
    paths = ", ".join(f'"{path}"' for path in SAMPLES)
    script.write_text(WRK_SCRIPT % paths)
    return script


def side_by_side(
    servers: list[Running],
    requests: list[bytes],
    count: int,
    concurrency: int,
    rounds: int,
    wrk: tuple[Path, float] | None = None,
) -> dict[str, dict[str, float]]:
    def one(server: Running, warm_up: bool = False) -> tuple[float, float, int]:
        if wrk:
            return server.round_wrk(wrk[0], 1.0 if warm_up else wrk[1], concurrency)
        return server.round(requests, max(100, count // 10) if warm_up else count, concurrency)

    for server in servers:
        one(server, warm_up=True)
    results: dict[str, list[tuple[float, float, int]]] = {s.name: [] for s in servers}
    for r in range(rounds):
        for server in servers if r % 2 == 0 else servers[::-1]:
            results[server.name].append(one(server))
    return {
        name: {
            "rps": statistics.median(x[0] for x in rows),
            "rps_all": [round(x[0]) for x in rows],  # type: ignore[dict-item]
            "cpu_ms": statistics.median(x[1] for x in rows),
            "failed": sum(x[2] for x in rows),
        }
        for name, rows in results.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", type=Path, required=True, help="the digits binary of before")
    parser.add_argument("--new", type=Path, required=True, help="the digits binary of now")
    parser.add_argument("--det-old", type=Path, help="a detection binary of before (optional)")
    parser.add_argument("--det-new", type=Path, help="the same detection binary of now")
    parser.add_argument("--det-model", type=Path, help="the .tflite of the detection binaries")
    parser.add_argument("--requests", type=int, default=4000, help="per round (digits)")
    parser.add_argument("--det-requests", type=int, default=400, help="per round (detection)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bound-seconds", type=float, default=4.0)
    parser.add_argument("--client", choices=("python", "wrk"), default="python", help="for the digits rounds")
    parser.add_argument("--seconds", type=float, default=5.0, help="per digits round with --client wrk")
    args = parser.parse_args(argv)
    if args.client == "wrk" and not shutil.which("wrk"):
        parser.error("--client wrk needs wrk: apt-get install wrk")
    failed = False
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} cores usable, load average {os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        servers = [Running(args.old.resolve(), tmp, "old"), Running(args.new.resolve(), tmp, "new")]
        try:
            wrk = (wrk_script(tmp), args.seconds) if args.client == "wrk" else None
            got = side_by_side(servers, good_requests(), args.requests, 32, args.rounds, wrk)
            new_pid = servers[1].proc.pid
            workers = children(new_pid)
            parts = {"supervisor": memory_kb(new_pid), **{f"worker {p}": memory_kb(p) for p in workers}}
            old_memory = memory_kb(servers[0].proc.pid)
        finally:
            codes = [s.stop() for s in servers]
        failed |= any(codes) or any(v["failed"] for v in got.values())
        old, new = got["old"], got["new"]
        print()
        rounds = f"{args.seconds:g} s with wrk" if wrk else f"{args.requests} requests"
        print(f"## digits, concurrency 32, {args.rounds} alternating rounds of {rounds}")
        print()
        print("| binary | req/s (median) | rounds | server CPU ms/request | failed |")
        print("|---|---|---|---|---|")
        for name in ("old", "new"):
            row = got[name]
            print(
                f"| {name} | {row['rps']:,.0f} | {row['rps_all']} | {row['cpu_ms']:.3f} "
                f"| {row['failed']:.0f} |"
            )
        print(f"\nnew / old: **{new['rps'] / old['rps']:.2f}x**; exit codes after SIGTERM: {codes}")
        print()
        print("| process (new, after the load) | RSS MB | PSS MB | private MB |")
        print("|---|---|---|---|")
        for name, mem in parts.items():
            print(
                f"| {name} | {mem['rss'] / 1024:.1f} | {mem['pss'] / 1024:.1f} "
                f"| {mem['private'] / 1024:.1f} |"
            )
        total_pss = sum(m["pss"] for m in parts.values())
        private = [parts[f"worker {p}"]["private"] for p in workers]
        print(
            f"| old (one process) | {old_memory['rss'] / 1024:.1f} | {old_memory['pss'] / 1024:.1f} "
            f"| {old_memory['private'] / 1024:.1f} |"
        )
        print(
            f"\nnew server in all (PSS summed): {total_pss / 1024:.1f} MB; each extra worker process costs "
            f"its private memory, {statistics.mean(private) / 1024:.1f} MB on average"
        )

        if args.det_new and args.det_model:
            image = tmp / "photo-640x480.png"
            body = photo_png(image)
            det = [post("/v1/infer", body)]
            before = pipeline_bound(args.det_new.resolve(), args.det_model, image, args.bound_seconds)
            dets = [Running(args.det_new.resolve(), tmp, "det-new")]
            if args.det_old:
                dets.insert(0, Running(args.det_old.resolve(), tmp, "det-old"))
            try:
                got = side_by_side(dets, det, args.det_requests, 8, max(3, args.rounds - 2))
            finally:
                codes = [s.stop() for s in dets]
            after = pipeline_bound(args.det_new.resolve(), args.det_model, image, args.bound_seconds)
            bound = (before + after) / 2
            failed |= any(codes) or any(v["failed"] for v in got.values())
            print()
            print(
                f"## detection ({args.det_model.name}), 640x480 PNG ({len(body) / 1024:.0f} kB), "
                "concurrency 8, default workers"
            )
            print()
            print(
                f"in-process bound (decode + preprocess + invoke + detections + JSON, one process per core): "
                f"{before:,.1f} / {after:,.1f} per s before / after the load, "
                f"{cores / bound * 1000:.2f} ms CPU per request"
            )
            print()
            print(
                "| binary | req/s (median) | rounds | vs in-process bound | server CPU ms/request | failed |"
            )
            print("|---|---|---|---|---|---|")
            for name, row in got.items():
                print(
                    f"| {name} | {row['rps']:,.1f} | {row['rps_all']} | **{row['rps'] / bound:.2f}x** "
                    f"| {row['cpu_ms']:.2f} | {row['failed']:.0f} |"
                )
            print(f"\nexit codes after SIGTERM: {codes}")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print("RESULT:", "FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
