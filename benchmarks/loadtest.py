"""Load test of a built binary's ``--serve`` mode, on 127.0.0.1 only, with bounded request counts.

    .venv/bin/python benchmarks/loadtest.py dist/digits tests/fixtures/models/digits_float.tflite

What it measures, in one run, and prints as a Markdown table:
- the in-process compute bound: one process per core looping over interpreter invokes of the same
  model (the build environment's Python running the runtime unfrozen), and the same with the whole
  per-request pipeline (decode, preprocess, invoke, top-k, JSON);
- throughput, p50 and p99 latency at concurrency 1, 8 and 32 (keep-alive connections), zero failures
  required;
- RSS of the server (the whole process tree of the binary) over 10,000 requests after a warm-up;
- a mix with 10% malformed requests: every malformed one must get a 4xx, every good one a 200.

``--old OLD_BINARY`` (and serving.py's other options after it): instead, the old and the new
binary side by side in one run, and a detection binary against its in-process bound
(benchmarks/serving.py).

The client is one process with one selector loop (no threads), the cheapest load generator Python
has; it shares the machine's cores with the server, which the table states as the client's CPU time.
Exit status 1 when a requirement (no failures, malformed -> 4xx, RSS growth < 5%) is not met.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgebundle.runtime.measure import children  # noqa: E402
from edgebundle.target import load_target  # noqa: E402
from edgebundle.toolchains.venv import HostVenv  # noqa: E402

HOST = "127.0.0.1"  # never anything else: this tool only ever loads the local machine
DIGITS = ROOT / "tests" / "fixtures" / "digits"
SAMPLES = [DIGITS / f"sample_{i}.png" for i in range(10)]  # what good_requests posts, in turn

BOUND_SCRIPT = """
import json, sys, time
from pathlib import Path
from ebrt.session import Session
from ebrt.postprocess import summarize
root, image, mode, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
s = Session(root, json.loads((root / "manifest.json").read_text()), 1)
data = Path(image).read_bytes()
feeds = s.feeds_for_image(data)
for _ in range(50):
    s.infer(feeds)
n, start = 0, time.perf_counter()
while (elapsed := time.perf_counter() - start) < seconds:
    for _ in range(50):
        if mode == "pipeline":
            values, ms = s.infer(s.feeds_for_image(data))
            json.dumps(summarize(values, s.outputs, s.recipe["output"], s.labels))
        else:
            s.infer(feeds)
    n += 50
print(n / elapsed)
"""


def gray_png(width: int, height: int, pixels: bool = True) -> bytes:
    """An all-black 8-bit grayscale PNG. Without ``pixels`` it only declares its size: a
    decompression bomb as far as a server can tell before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = (b"\0" * (width + 1)) * height if pixels else b"\0" * 64
    idat = zlib.compress(rows, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def good_requests() -> list[bytes]:
    return [post("/v1/infer", path.read_bytes()) for path in SAMPLES]


def malformed_requests() -> list[tuple[str, bytes]]:
    png = (DIGITS / "sample_7.png").read_bytes()
    return [
        ("empty body", post("/v1/infer", b"")),
        ("not an image", post("/v1/infer", b"hello, this is not an image" * 4)),
        ("truncated image", post("/v1/infer", png[: len(png) // 2])),
        ("decompression bomb", post("/v1/infer", gray_png(100_000, 100_000, pixels=False))),
        (
            "huge Content-Length",
            f"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {10**15}\r\n\r\n".encode(),
        ),
        ("bad Content-Length", b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n"),
        ("unknown path", b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("wrong method", b"DELETE /v1/infer HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("garbage request line", b"HELLO\r\n\r\n"),
        (
            "bad multipart",
            post("/v1/infer", b"--x\r\nno headers here", "Content-Type: multipart/form-data\r\n"),
        ),
    ]


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)  # kind -> status -> count
    errors: int = 0
    elapsed: float = 0.0

    def add(self, kind: str, status: int) -> None:
        by_status = self.statuses.setdefault(kind, {})
        by_status[status] = by_status.get(status, 0) + 1


class _Conn:
    __slots__ = ("buf", "kind", "sent", "sock")

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.kind = ""
        self.sent = 0.0


def _response(buf: bytes) -> tuple[int, bool, int] | None:
    """(status, connection closes, bytes used) when ``buf`` starts with a whole response."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    length, close = 0, False
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection":
            close = value.strip().lower() == "close"
    if len(buf) < end + 4 + length:
        return None
    return status, close, end + 4 + length


def drive(port: int, work: Iterator[tuple[str, bytes]], concurrency: int, limit_s: float) -> Outcome:
    """Send every request of ``work`` over ``concurrency`` keep-alive connections, one in flight on
    each, reconnecting when the server closes; stops early after ``limit_s`` seconds."""
    out = Outcome()
    sel = selectors.DefaultSelector()

    def send_next(conn: _Conn) -> bool:
        item = next(work, None)
        if item is None:
            return False
        conn.kind, request = item
        conn.sent = time.perf_counter()
        conn.sock.sendall(request)
        return True

    start = time.perf_counter()
    live = 0
    for _ in range(concurrency):
        conn = _Conn(port)
        if send_next(conn):
            sel.register(conn.sock, selectors.EVENT_READ, conn)
            live += 1
        else:
            conn.sock.close()
    while live and time.perf_counter() - start < limit_s:
        for key, _ in sel.select(timeout=5.0):
            conn = key.data
            try:
                chunk = conn.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            parsed = _response(conn.buf + chunk) if chunk else None
            conn.buf += chunk
            if parsed is None:
                if chunk:
                    continue
                out.errors += 1  # closed without a whole answer
                out.add(conn.kind, 0)
                close = True
            else:
                status, close, used = parsed
                out.latencies.append(time.perf_counter() - conn.sent)
                out.add(conn.kind, status)
                conn.buf = conn.buf[used:]
            if close:
                sel.unregister(conn.sock)
                conn.sock.close()
                conn = _Conn(port)
                sel.register(conn.sock, selectors.EVENT_READ, conn)
            if not send_next(conn):
                sel.unregister(conn.sock)
                conn.sock.close()
                live -= 1
    out.elapsed = time.perf_counter() - start
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return out


def cycle(requests: list[bytes], count: int, kind: str = "good") -> Iterator[tuple[str, bytes]]:
    for i in range(count):
        yield kind, requests[i % len(requests)]


def mixed(good: list[bytes], bad: list[tuple[str, bytes]], count: int) -> Iterator[tuple[str, bytes]]:
    for i in range(count):
        if i % 10 == 9:
            yield bad[(i // 10) % len(bad)]
        else:
            yield "good", good[i % len(good)]


def tree_rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (a onefile binary is two processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def tree_cpu_s(pid: int) -> float:
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [d for c in found for d in _descendants(c)]


def compute_bound(binary: Path, model: Path, manifest: dict[str, object], seconds: float) -> dict[str, float]:
    """Inferences per second of the machine's cores, in-process, no HTTP: invoke only and pipeline."""
    target_name = manifest["target"]["name"]  # type: ignore[index]
    target = load_target(str(ROOT / "targets" / f"{target_name}.toml"))
    python = HostVenv(target, str(manifest["backend"])).python
    cores = len(os.sched_getaffinity(0))
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp)
        shutil.copytree(
            ROOT / "edgebundle" / "runtime", app / "ebrt", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copyfile(model, app / "model.tflite")
        (app / "manifest.json").write_text(json.dumps(manifest))
        image = str(DIGITS / "sample_7.png")
        for mode in ("invoke", "pipeline"):
            procs = [
                subprocess.Popen(
                    [python, "-c", BOUND_SCRIPT, str(app), image, mode, str(seconds)],
                    cwd=app,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(cores)
            ]
            rates[mode] = sum(float(p.communicate()[0]) for p in procs)
    rates["cores"] = cores
    return rates


def start_server(
    binary: Path, workers: int | None, log: Path, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    argv = [str(binary), "--serve", "--host", HOST, "--port", "0", *extra]
    if workers:
        argv += ["--workers", str(workers)]
    err = open(log, "wb")  # noqa: SIM115 - the server writes to it for its whole life
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines():  # whole lines only
            record = json.loads(line)
            if record.get("event") == "listening":
                port = int(record["port"])
                while time.monotonic() < deadline:
                    try:
                        with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=5) as r:
                            if r.status == 200:
                                return proc, port
                    except OSError:
                        time.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not become ready in 60 s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    if "--old" in sys.argv[1:]:  # side by side: serving.py, with the binary given first as --new
        from benchmarks.serving import main as side_by_side

        argv = sys.argv[1:]
        if argv and not argv[0].startswith("-"):
            argv = ["--new", argv[0], *argv[1:]]
        return side_by_side(argv)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("binary", type=Path)
    parser.add_argument("model", type=Path, help="the .tflite the binary was built from (for the bound)")
    parser.add_argument("--workers", type=int, help="server --workers (default: the server's own)")
    parser.add_argument("--requests", type=int, default=5000, help="per concurrency level (default 5000)")
    parser.add_argument("--soak", type=int, default=10_000, help="requests for the RSS check (default 10000)")
    parser.add_argument("--bound-seconds", type=float, default=3.0)
    parser.add_argument("--limit-s", type=float, default=120.0, help="time cap per phase")
    args = parser.parse_args()

    binary = args.binary.resolve()
    manifest = json.loads(subprocess.run([str(binary), "--info"], capture_output=True, check=True).stdout)
    before = compute_bound(binary, args.model, manifest, args.bound_seconds)
    good = good_requests()
    bad = malformed_requests()
    failed = False
    rows: list[tuple[int, float, float, float, int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc, port = start_server(binary, args.workers, log)
        try:
            drive(port, cycle(good, 500), 8, args.limit_s)  # warm-up
            for concurrency in (1, 8, 32):
                cpu0, client0 = tree_cpu_s(proc.pid), time.process_time()
                out = drive(port, cycle(good, args.requests), concurrency, args.limit_s)
                server_cpu = tree_cpu_s(proc.pid) - cpu0
                client_cpu = time.process_time() - client0
                ok = out.statuses.get("good", {}).get(200, 0)
                bad_count = len(out.latencies) + out.errors - ok
                failed |= bad_count > 0 or ok != args.requests
                p50, p99 = pct(out.latencies, 0.5), pct(out.latencies, 0.99)
                cores = server_cpu / out.elapsed, client_cpu / out.elapsed
                rows.append((concurrency, ok / out.elapsed, p50, p99, bad_count, *cores))
            # The machine may be shared: the bound again, right after, and the mean of both is used.
            after = compute_bound(binary, args.model, manifest, args.bound_seconds)
            bound = {k: (before[k] + after[k]) / 2 for k in before}

            # RSS over the soak, after the warm-up above and the first 10% of the soak.
            warm = max(1, args.soak // 10)
            drive(port, cycle(good, warm), 8, args.limit_s)
            rss_start = tree_rss_kb(proc.pid)
            samples = [rss_start]
            done = 0
            soak_failures = 0
            while done < args.soak:
                step = min(args.soak // 10, args.soak - done)
                out = drive(port, cycle(good, step), 8, args.limit_s)
                soak_failures += step - out.statuses.get("good", {}).get(200, 0)
                done += step
                samples.append(tree_rss_kb(proc.pid))
            growth = (samples[-1] - rss_start) / rss_start * 100
            failed |= soak_failures > 0 or growth >= 5.0

            mix = drive(port, mixed(good, bad, 2000), 8, args.limit_s)
            good_ok = mix.statuses.get("good", {}).get(200, 0)
            good_total = sum(mix.statuses.get("good", {}).values())
            bad_lines = []
            bad_all_4xx = True
            for kind, _ in bad:
                statuses = mix.statuses.get(kind, {})
                bad_all_4xx &= bool(statuses) and all(400 <= s < 500 for s in statuses)
                bad_lines.append(f"  {kind}: {dict(sorted(statuses.items()))}")
            failed |= good_ok != good_total or not bad_all_4xx or mix.errors > 0
            health = urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=5).status
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        failed |= code != 0

    print(f"binary: {binary.name} ({manifest['model']['source_name']}), {before['cores']:.0f} cores, "
          f"server workers: {args.workers or 'default (one per core)'}")  # fmt: skip
    print(
        f"in-process compute bound, all cores (before / after the load): invoke only "
        f"{before['invoke']:,.0f} / {after['invoke']:,.0f} per s; whole pipeline (decode, preprocess, "
        f"invoke, top-k, JSON) {before['pipeline']:,.0f} / {after['pipeline']:,.0f} per s"
    )
    print()
    print("| concurrency | req/s | vs pipeline bound | vs invoke bound | p50 ms | p99 ms | failed "
          "| server CPU (cores) | client CPU (cores) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for concurrency, qps, p50, p99, bad_count, server_cores, client_cores in rows:
        print(
            f"| {concurrency} | {qps:,.0f} | {qps / bound['pipeline']:.2f}x | {qps / bound['invoke']:.2f}x "
            f"| {p50:.2f} | {p99:.2f} | {bad_count} | {server_cores:.2f} | {client_cores:.2f} |"
        )
    print()
    print(
        f"RSS over {args.soak} requests after warm-up: {rss_start / 1024:.1f} MB -> "
        f"{samples[-1] / 1024:.1f} MB "
        f"({growth:+.2f}%), samples MB: {[round(s / 1024, 1) for s in samples]}, failures {soak_failures}"
    )
    print(f"malformed mix (2000 requests, 10% malformed): good {good_ok}/{good_total} ok, "
          f"malformed all 4xx: {bad_all_4xx}, connection errors {mix.errors}")  # fmt: skip
    print("\n".join(bad_lines))
    print(f"/healthz after the mix: {health}; exit code after SIGTERM: {code}")
    print("RESULT:", "FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
