"""Memory of a built binary's ``--serve`` mode under concurrent large images, on 127.0.0.1 only.

    .venv/bin/python benchmarks/decode_memory.py dist/digits [--workers 2] [--concurrency 8]

For each kind of image (a flat-colour 8-bit grayscale PNG, an RGB PNG, a 16-bit grayscale PNG and
an RGB JPEG, each just under the default --max-megapixels of 40), it starts the binary with
``--serve --workers N``, posts ``--concurrency`` copies of the image at once, and reports:

- the server's resident memory before (idle, ready), its peak while the requests run (polled every
  10 ms, and the kernel's own high-water mark VmHWM), and what it holds 1, 5 and 10 s after the last
  answer;
- the limits issue #13 sets: peak <= 400 MB, and back to <= idle + 50 MB within 10 s.

Flat colours compress to almost nothing, so the request bodies are small and what is measured is
decoding. Results are printed as Markdown and written to benchmarks/results/decode-memory.md.
Extra arguments after ``--`` go to the server (e.g. ``-- --max-decode-mp 80``).
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import signal
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.loadtest import HOST, gray_png, start_server, tree_rss_kb  # noqa: E402

WIDTH, HEIGHT = 7280, 5450  # 39.7 megapixels: just under the default --max-megapixels 40
PEAK_LIMIT_MB = 400.0
IDLE_SLACK_MB = 50.0
IDLE_AFTER_S = (1.0, 5.0, 10.0)


def png(width: int, height: int, depth: int, color_type: int, pixel: bytes) -> bytes:
    """A PNG of one flat colour, compressed a row at a time (never the whole raw image in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + pixel * width
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def images(width: int, height: int) -> dict[str, bytes]:
    return {
        "gray PNG (8-bit)": gray_png(width, height),
        "RGB PNG (8-bit)": png(width, height, 8, 2, b"\xc8\x78\x28"),
        "gray PNG (16-bit)": png(width, height, 16, 0, b"\x80\x00"),
        "RGB JPEG": jpeg(width, height),
    }


def rss_mb(pid: int) -> float:
    return tree_rss_kb(pid) / 1024


def hwm_mb(pid: int) -> float:
    """The largest VmHWM in the tree (the runner: the launcher is a few hundred KB)."""
    best = 0
    for entry in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{entry}/status") as f:
                best = max(best, next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")))
        except (OSError, StopIteration):
            pass
    return best / 1024


def _children(pid: int) -> list[int]:
    from benchmarks.loadtest import _descendants

    return _descendants(pid)


def post(port: int, body: bytes, statuses: list[int]) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    try:
        conn.request("POST", "/v1/infer", body=body)
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
    finally:
        conn.close()


def measure(binary: Path, body: bytes, workers: int, concurrency: int, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(binary, workers, Path(tmp) / "serve.log", extra)
        try:
            time.sleep(1.0)
            idle = rss_mb(proc.pid)
            statuses: list[int] = []
            threads = [threading.Thread(target=post, args=(port, body, statuses)) for _ in range(concurrency)]
            start = time.monotonic()
            for thread in threads:
                thread.start()
            peak = idle
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss_mb(proc.pid))
                time.sleep(0.01)
            seconds = time.monotonic() - start
            done = time.monotonic()
            after = {}
            for wait in IDLE_AFTER_S:
                time.sleep(max(0.0, done + wait - time.monotonic()))
                after[wait] = rss_mb(proc.pid)
            hwm = hwm_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    ok = sum(1 for s in statuses if s == 200)
    return {
        "idle": idle,
        "peak": max(peak, hwm),
        "polled": peak,
        "seconds": seconds,
        "ok": ok,
        **{f"after{w:g}": v for w, v in after.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--label", default="", help="a name for this run in the results file")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "decode-memory.md")
    parser.add_argument("extra", nargs="*", help="after --: arguments for the server")
    args = parser.parse_args()
    rows = []
    failed = False
    for kind, body in images(WIDTH, HEIGHT).items():
        m = measure(args.binary, body, args.workers, args.concurrency, args.extra)
        peak_ok = m["peak"] <= PEAK_LIMIT_MB
        idle_ok = m["after10"] <= m["idle"] + IDLE_SLACK_MB
        failed |= not (peak_ok and idle_ok) or m["ok"] != args.concurrency
        rows.append(
            f"| {kind} | {len(body) / 1024:.0f} KB | {m['ok']}/{args.concurrency} | {m['seconds']:.1f} "
            f"| {m['idle']:.0f} | {m['peak']:.0f} ({m['peak'] / PEAK_LIMIT_MB:.2f}x limit) "
            f"| {m['after1']:.0f} | {m['after5']:.0f} | {m['after10']:.0f} "
            f"({m['after10'] - m['idle']:+.0f}) | {'met' if peak_ok and idle_ok else 'NOT met'} |"
        )
        print(rows[-1], flush=True)
    label = args.label or " ".join(args.extra) or "defaults"
    text = "\n".join(
        [
            f"## {label}: `{args.binary.name} --serve --workers {args.workers} {' '.join(args.extra)}`",
            "",
            f"{args.concurrency} concurrent requests of one {WIDTH}x{HEIGHT} ({WIDTH * HEIGHT / 1e6:.1f} MP) "
            f"image each; {len(os.sched_getaffinity(0))} CPUs. Limits: peak <= {PEAK_LIMIT_MB:.0f} MB, "
            f"<= idle + {IDLE_SLACK_MB:.0f} MB 10 s after the last answer.",
            "",
            "| image | body | 200s | seconds | idle MB | peak MB | +1 s MB | +5 s MB | +10 s MB | limits |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "a") as f:
        f.write(text + "\n")
    print(f"appended to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
