"""``APP --serve``: the bundled model behind a small HTTP/1.1 server (standard library only).

Routes: ``POST /v1/infer`` (raw image body or multipart/form-data; the CLI's JSON), ``GET /healthz``
(the process answers), ``GET /readyz`` (model loaded and the self-test passed), ``GET /metrics``
(Prometheus text), ``GET /v1/info`` (the manifest). Every error is a JSON body
``{"error": CODE, "message": ..., "status": N}``; logs are one JSON object per line on stderr.

Threading model: one asyncio event loop (the main thread) owns every socket: it accepts, reads
requests into per-connection buffers, enforces deadlines with timers and writes answers. Inferences
go to a Pool of N worker threads, each owning one interpreter (workers.py); a finished job wakes its
request through ``call_soon_threadsafe``. A request waits for its job at most ``--timeout-ms`` (from
its first byte) and gets 504 when late; the worker finishes or skips the job on its own, so a slow
inference holds up one worker and nothing else. The model loads in a thread after the port is open,
so /healthz answers at once and /readyz turns 200 when the self-test has passed.

Why asyncio and not a thread per connection (socket + threading, written first) or http.server:
measured on the digits model, at 32 connections the threaded server spent more CPU per request
(median 470 vs 360 us, 32 threads convoying on the GIL) for the same throughput and needs a thread
per idle keep-alive connection; http.server was 4x slower. asyncio costs ~50 ms of imports, paid only
by ``--serve``. README "Serving" has the numbers.
The HTTP subset is small: Content-Length or chunked bodies, keep-alive, pipelining, ``Expect:
100-continue``.

Robustness: a request must arrive whole within ``--read-timeout-ms`` of its first byte (else 408),
headers are capped (431), bodies too (413, refused from the declared length before reading), a
client far ahead of the server is paused (flow control), one that does not read its answers is
dropped after the read timeout, idle keep-alive connections close after it, connections are capped
(503), bodies in flight are capped as a whole (``--max-inflight-mb``: a body that would exceed it is
refused with 503 and Retry-After before it is read, and a connection buffers at most a request head
and one read beyond the body it was granted: memory stays bounded whatever clients send), decodes
are capped as a whole too (``--max-decode-mb``, each decode's memory estimated from its image's
header; more waits: memory.py), and a
request that cannot be framed closes its connection after the answer (lingering, so the client can
read it). SIGTERM/SIGINT: stop accepting, close idle connections, let in-flight requests finish
(each bounded by the read timeout plus the inference timeout), exit 0; a second signal exits at once
with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from bisect import bisect_left
from typing import Any

from .memory import DecodeBudget
from .model import ModelLoadError
from .payload import Bundle
from .preprocess import max_pixels
from .session import is_detection
from .workers import (
    Job,
    Pool,
    RequestError,
    load_sessions,
    test_hooks_enabled,
)

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_BAD_ARGS = 2
EXIT_MODEL = 3
EXIT_INTERNAL = 70

MAX_HEAD_BYTES = 32 * 1024
MAX_CONNECTIONS = 512
LINGER_S = 1.0  # how long to drain unread input before closing after an error (avoids a reset)
# What a connection may buffer beyond the body it was granted before it stops reading: a request
# head (plus the one read that crossed the line: asyncio reads up to 256 KB at a time).
UNFRAMED_BYTES = MAX_HEAD_BYTES

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}
GET_METHODS = ("GET", "HEAD")
ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/infer": ("POST",),
    "/healthz": GET_METHODS,
    "/readyz": GET_METHODS,
    "/metrics": GET_METHODS,
    "/v1/info": GET_METHODS,
}
# Latency histogram buckets, seconds (Prometheus ``le`` bounds).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TEST_DELAY_HEADER = "x-ebrt-test-delay-ms"


class HTTPError(Exception):
    """A request answered with an error; ``close`` when the connection cannot be reused after it."""

    def __init__(self, status: int, code: str, message: str, close: bool = False, extra: str = "") -> None:
        super().__init__(message)
        self.error = RequestError(status, code, message)
        self.close = close
        self.extra = extra  # header lines, each ending in CRLF


class _Closed(Exception):
    """The peer closed its side."""


class Log:
    """One JSON object per line on stderr, whole lines only (a lock across threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        record = {"ts": stamp, "level": level, "event": event, **fields}
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not take a request down with it


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def render(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        lines, total = [], 0
        for bound, count in zip(BUCKETS, self.counts, strict=False):
            total += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {total}')
        total += self.counts[-1]
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {total}')
        braced = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{braced} {self.sum:.6f}")
        lines.append(f"{name}_count{braced} {total}")
        return lines


class Metrics:
    """Counters and histograms behind one lock, rendered in the Prometheus text format 0.0.4."""

    def __init__(self, manifest: dict[str, Any], workers: int) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.inference = Histogram()
        self.request_duration = Histogram()
        self.in_flight = 0
        self.connections = 0
        self.workers = workers
        self.started = time.time()
        model = manifest["model"]
        self.sha256 = model["sha256"]
        interp = manifest["interpreter"]
        self.info_labels = (
            f'model_sha256="{self.sha256}",model_file="{_escape(model.get("source_name", ""))}",'
            f'interpreter="{_escape(interp["name"])}",interpreter_version="{_escape(interp["version"])}"'
        )

    def count(self, path: str, status: int, seconds: float | None) -> None:
        key = (path if path in ROUTES else "other", status)
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            if seconds is not None:
                self.request_duration.observe(seconds)

    def observe_inference(self, job: Job) -> None:
        if job.result is not None:
            with self._lock:
                self.inference.observe(job.infer_ms / 1000.0)

    def add_in_flight(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta

    def add_connections(self, delta: int) -> None:
        with self._lock:
            self.connections += delta

    def render(self, ready: bool, body_bytes: int, budget: DecodeBudget | None = None) -> str:
        """``ready`` and ``body_bytes`` (request bodies held) are the server's own state, which only
        the event loop's thread, the one rendering, changes; ``budget`` the workers' decodes."""
        with self._lock:
            out = [
                "# HELP ebrt_http_requests_total HTTP requests answered, by route and status code.",
                "# TYPE ebrt_http_requests_total counter",
            ]
            for (path, status), n in sorted(self.requests.items()):
                out.append(f'ebrt_http_requests_total{{path="{path}",code="{status}"}} {n}')
            out += [
                "# HELP ebrt_inference_duration_seconds Interpreter invoke time per inference.",
                "# TYPE ebrt_inference_duration_seconds histogram",
                *self.inference.render("ebrt_inference_duration_seconds", f'model_sha256="{self.sha256}"'),
                "# HELP ebrt_request_duration_seconds /v1/infer time from request received to answer.",
                "# TYPE ebrt_request_duration_seconds histogram",
                *self.request_duration.render("ebrt_request_duration_seconds", 'path="/v1/infer"'),
                "# HELP ebrt_inference_requests_in_flight /v1/infer requests received and not yet answered.",
                "# TYPE ebrt_inference_requests_in_flight gauge",
                f"ebrt_inference_requests_in_flight {self.in_flight}",
                "# HELP ebrt_open_connections Client connections open.",
                "# TYPE ebrt_open_connections gauge",
                f"ebrt_open_connections {self.connections}",
                "# HELP ebrt_request_body_bytes_in_flight Request body bytes admitted, being read or held.",
                "# TYPE ebrt_request_body_bytes_in_flight gauge",
                f"ebrt_request_body_bytes_in_flight {body_bytes}",
            ]
        out += [
            "# HELP ebrt_decode_bytes_in_flight Decoded image bytes being held (--max-decode-mb).",
            "# TYPE ebrt_decode_bytes_in_flight gauge",
            f"ebrt_decode_bytes_in_flight {budget.used if budget else 0}",
            "# HELP ebrt_decodes_waiting Decodes waiting for --max-decode-mb to have room.",
            "# TYPE ebrt_decodes_waiting gauge",
            f"ebrt_decodes_waiting {budget.waiting if budget else 0}",
            "# HELP ebrt_workers Inference workers (one interpreter each).",
            "# TYPE ebrt_workers gauge",
            f"ebrt_workers {self.workers}",
            "# HELP ebrt_ready 1 when the model is loaded and the self-test passed.",
            "# TYPE ebrt_ready gauge",
            f"ebrt_ready {int(ready)}",
            "# HELP ebrt_model_info The bundled model and interpreter.",
            "# TYPE ebrt_model_info gauge",
            f"ebrt_model_info{{{self.info_labels}}} 1",
            "# HELP process_resident_memory_bytes Resident memory of this process.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {_rss_bytes()}",
            "# HELP process_cpu_seconds_total User and system CPU time of this process.",
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {sum(os.times()[:2]):.2f}",
            "# HELP process_start_time_seconds Start time of this process, Unix epoch seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {self.started:.3f}",
        ]
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(now: float) -> str:
    t = time.gmtime(now)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


class Request:
    __slots__ = ("body", "chunked", "headers", "keep_alive", "length", "method", "path", "query", "started")

    def __init__(self, method: str, path: str, headers: dict[str, str], keep_alive: bool) -> None:
        self.method = method
        self.path, _, self.query = path.partition("?")
        self.headers = headers
        self.keep_alive = keep_alive
        self.length = 0
        self.chunked = False
        self.body = b""
        self.started = time.monotonic()


def parse_head(head: bytes) -> Request:
    """Request line and headers (without the final blank line) -> Request; HTTPError when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    while lines and not lines[0]:  # RFC 9112 2.2: ignore empty lines before the request line
        lines.pop(0)
    parts = lines[0].split(" ") if lines else []
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise HTTPError(400, "bad_request", "malformed request line", close=True)
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HTTPError(400, "bad_request", f"unsupported protocol {version[:20]!r}", close=True)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HTTPError(400, "bad_request", "malformed header line", close=True)
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    connection = headers.get("connection", "").lower()
    keep = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    return Request(method, target, headers, keep)


def frame(req: Request, max_body: int) -> None:
    """Decide how the body is delimited (RFC 9112 6.3), refusing what cannot be or is too large."""
    te = req.headers.get("transfer-encoding")
    cl = req.headers.get("content-length")
    if te is not None:
        if cl is not None:
            raise HTTPError(400, "bad_request", "both Transfer-Encoding and Content-Length", close=True)
        if te.lower() != "chunked":
            raise HTTPError(501, "unsupported", f"transfer-encoding {te[:40]!r}", close=True)
        req.chunked = True
    elif cl is not None:
        if not (cl.isascii() and cl.isdigit()):
            raise HTTPError(400, "bad_request", f"bad Content-Length {cl[:40]!r}", close=True)
        if len(cl) > 15 or int(cl) > max_body:
            raise HTTPError(413, "body_too_large", f"body over {max_body} bytes", close=True)
        req.length = int(cl)


def multipart_image(body: bytes, content_type: str) -> bytes:
    """The image from a multipart/form-data body: the field named ``image`` or ``file``, else the
    first part with a filename, else the first part."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary or len(boundary) > 200:
        raise RequestError(400, "bad_request", "multipart/form-data without a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(b"\r\n" + delimiter)
    if not chunks[0].startswith(delimiter) or len(chunks) < 2:
        raise RequestError(400, "bad_request", "malformed multipart body")
    parts: list[tuple[str, bool, bytes]] = []
    for chunk in [chunks[0][len(delimiter) :], *chunks[1:-1]]:
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise RequestError(400, "bad_request", "malformed multipart part")
        disposition = ""
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value
        params = dict(
            (k.strip().lower(), v.strip().strip('"'))
            for k, _, v in (p.partition("=") for p in disposition.split(";")[1:])
        )
        parts.append((params.get("name", ""), "filename" in params, content))
    if not parts:
        raise RequestError(400, "bad_request", "multipart body has no parts")
    for pick in (
        lambda p: p[0] in ("image", "file"),
        lambda p: p[1],
        lambda p: True,
    ):
        for part in parts:
            if pick(part):
                return part[2]
    raise AssertionError("unreachable")


class Connection(asyncio.Protocol):
    """One client connection: the event loop feeds ``data_received``; a task per connection reads
    requests from the buffer with deadlines and writes the answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.req: Request | None = None  # the request being answered, once its head is parsed
        self.busy = False  # from the first byte of a request to the end of its answer
        self.eof = False
        self.waiter: asyncio.Future[None] | None = None  # woken by data, EOF or writability
        self.granted = 0  # body bytes of the current request counted in the server's in-flight total
        self.reading_paused = False
        self.writing_paused = False
        self.discard = False  # lingering: input is dropped

    # --- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if not self.server.admit(self):
            body = json.dumps(RequestError(503, "busy", "too many connections").body()).encode()
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            transport.close()
            return
        self.loop.create_task(self.run())

    def data_received(self, data: bytes) -> None:
        if self.discard:
            return
        self.buf += data
        self.busy = True
        if len(self.buf) > UNFRAMED_BYTES + self.granted and not self.reading_paused:
            self.reading_paused = True  # a client far ahead of us waits in its own buffers
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return True  # keep our side open: a half-closed client may still read the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.writing_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def _wait(self, deadline: float) -> None:
        """Until the next event on this connection; TimeoutError at ``deadline`` (loop time)."""
        if deadline <= self.loop.time():
            raise TimeoutError
        self.waiter = waiter = self.loop.create_future()
        timer = self.loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    # --- the request loop --------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while await self._serve_one():
                pass
        except (OSError, _Closed):
            pass  # the client went away; nothing to answer
        except Exception as exc:  # a bug must cost one connection, never the service
            self.server.log("error", "connection_error", peer=self.peer, error=f"{type(exc).__name__}: {exc}")
        finally:
            if self.transport is not None:
                self.transport.close()
            self.server.forget(self)

    async def _serve_one(self) -> bool:
        """Read and answer one request; False when the connection should close."""
        server = self.server
        if not self.buf:
            try:
                await self._recv(self.loop.time() + server.read_timeout)
            except (TimeoutError, _Closed):
                return False  # idle keep-alive connection: close quietly
        self.busy = True
        self.req = None
        try:
            req = await self._read_request()
            status, body, extra, unread = await server.handle(req)
            keep = req.keep_alive and not unread
        except HTTPError as exc:
            status, body, extra, unread = exc.error.status, exc.error.body(), exc.extra, exc.close
            keep = not exc.close
        except TimeoutError:
            status, body, extra, unread, keep = _error(408, "timeout", "request not received in time")
        except _Closed:
            # The peer half-closed mid-request: answer if it still listens, then close.
            status, body, extra, unread, keep = _error(400, "truncated", "request ended early")
        finally:
            self._release()
        keep = keep and not server.draining
        parsed = self.req  # None when the request line or headers were unreadable
        await self._respond(
            status, body, extra, keep, head_only=parsed is not None and parsed.method == "HEAD"
        )
        if parsed is not None:
            server.count(parsed.method, parsed.path, status, self.loop.time() - parsed.started, self.peer)
        else:
            server.count("?", "?", status, None, self.peer)
        self.busy = bool(self.buf)  # pipelined bytes are the next request
        if not self.buf:
            self.buf = bytearray()  # give back the capacity a large body left behind
        if not keep:
            if unread:
                await self._linger()
            return False
        return True

    async def _recv(self, deadline: float) -> None:
        """Wait for more input (any amount); _Closed at EOF, TimeoutError at the deadline."""
        if self.reading_paused:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        have = len(self.buf)
        while len(self.buf) == have:
            if self.eof:
                raise _Closed
            await self._wait(deadline)

    async def _read_request(self) -> Request:
        server = self.server
        started = self.loop.time()
        deadline = started + server.read_timeout
        scanned = 0
        while (end := self.buf.find(b"\r\n\r\n", scanned, MAX_HEAD_BYTES)) < 0:
            if len(self.buf) >= MAX_HEAD_BYTES:
                raise HTTPError(431, "headers_too_large", f"request head over {MAX_HEAD_BYTES} bytes", True)
            scanned = max(0, len(self.buf) - 3)
            await self._recv(deadline)
        req = self.req = parse_head(bytes(self.buf[:end]))
        del self.buf[: end + 4]
        req.started = started
        frame(req, server.max_body)
        server.route(req)
        if req.method == "POST":  # without Content-Length or chunked the body is empty (RFC 9112 6.3)
            self._grant(req.length)
            if req.headers.get("expect", "").lower() == "100-continue":
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if req.chunked:
                req.body = await self._read_chunked(deadline)
            else:
                req.body = await self._read_exact(req.length, deadline)
        elif req.chunked or req.length:
            raise HTTPError(400, "bad_request", f"{req.method} {req.path} takes no body", close=True)
        return req

    async def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            await self._recv(deadline)
        body = bytes(self.buf[:n])
        del self.buf[:n]
        return body

    async def _read_line(self, deadline: float) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > 4096:
                raise HTTPError(400, "bad_request", "malformed chunked body", close=True)
            await self._recv(deadline)
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    async def _read_chunked(self, deadline: float) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = (await self._read_line(deadline)).split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 15 or size_text.strip(b"0123456789abcdefABCDEF"):
                raise HTTPError(400, "bad_request", "malformed chunk size", close=True)
            size = int(size_text, 16)
            if size == 0:
                while await self._read_line(deadline):  # trailers, up to the blank line
                    pass
                return b"".join(parts)
            total += size
            if total > self.server.max_body:
                raise HTTPError(413, "body_too_large", f"body over {self.server.max_body} bytes", True)
            self._grant(size)
            parts.append(await self._read_exact(size, deadline))
            if await self._read_exact(2, deadline) != b"\r\n":
                raise HTTPError(400, "bad_request", "malformed chunked body", close=True)

    def _grant(self, n: int) -> None:
        """Count ``n`` more body bytes of this request in flight, or refuse the request (503)."""
        server = self.server
        if n and server.body_bytes + n > server.max_inflight:
            raise HTTPError(
                503,
                "busy",
                f"request bodies in flight would exceed {server.max_inflight} bytes; retry",
                close=True,
                extra="Retry-After: 1\r\n",
            )
        self.granted += n
        server.body_bytes += n

    def _release(self) -> None:
        self.server.body_bytes -= self.granted
        self.granted = 0

    async def _respond(
        self, status: int, body: bytes | dict[str, Any], extra: str, keep: bool, head_only: bool
    ) -> None:
        if isinstance(body, dict):
            payload = (json.dumps(body, separators=(",", ":")) + "\n").encode()
            ctype = "application/json"
        else:
            payload, ctype = body, "text/plain; version=0.0.4; charset=utf-8"
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
            f"Date: {http_date(time.time())}\r\nConnection: {'keep-alive' if keep else 'close'}\r\n"
            f"{extra}\r\n"
        ).encode("latin-1")
        assert self.transport is not None
        if self.transport.is_closing():
            raise _Closed
        self.transport.write(head if head_only else head + payload)
        # A client that does not read its answers is dropped after the read timeout.
        deadline = self.loop.time() + self.server.read_timeout
        while self.writing_paused:
            if self.transport.is_closing():
                raise _Closed
            await self._wait(deadline)

    async def _linger(self) -> None:
        """Close after an error with input left unread: stop sending, then drop what the client
        still sends for a moment, so that closing does not reset the connection before the client
        has read the answer."""
        assert self.transport is not None
        self.discard = True
        self.buf.clear()
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        deadline = self.loop.time() + LINGER_S
        with contextlib.suppress(TimeoutError):
            while not self.eof:
                await self._wait(deadline)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any], str, bool, bool]:
    """(status, body, extra headers, input left unread, keep-alive) for an error that closes."""
    return status, RequestError(status, code, message).body(), "", True, False


Answer = tuple[int, bytes | dict[str, Any], str, bool]  # status, body, extra headers, input unread


class Server:
    def __init__(self, opts: argparse.Namespace, root: Bundle, manifest: dict[str, Any], log: Log) -> None:
        self.root = root
        self.manifest = manifest
        self.log = log
        self.workers: int = opts.workers or len(os.sched_getaffinity(0))
        self.threads: int = opts.threads or 1
        self.max_pixels = max_pixels(opts.max_megapixels)
        self.budget = DecodeBudget(opts.max_decode_mb)
        self.timeout = opts.timeout_ms / 1000.0
        self.read_timeout = opts.read_timeout_ms / 1000.0
        self.max_body = int(opts.max_body_mb * 1024 * 1024)
        self.max_inflight = int(opts.max_inflight_mb * 1024 * 1024)
        self.body_bytes = 0  # request body bytes granted to connections (event loop thread only)
        self.access_log: bool = opts.access_log
        self.test_hooks = test_hooks_enabled()
        self.metrics = Metrics(manifest, self.workers)
        self.conns: set[Connection] = set()
        self.draining = False
        self.ready = False
        self.not_ready = "loading the model"
        self.pool: Pool | None = None
        self.exit_code: int | None = None
        self.signals = 0
        self.listener = _listen(opts.host, opts.port)
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.all_closed = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------------
    def run(self) -> int:
        try:
            code: int = self.loop.run_until_complete(self._main())
            return code
        finally:
            # Connections abandoned by a drain that ran out of time: end their tasks cleanly.
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.close()

    async def _main(self) -> int:
        loop = self.loop
        loop.set_exception_handler(self._loop_error)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)
        server = await loop.create_server(lambda: Connection(self), sock=self.listener, backlog=1024)
        host, port = self.listener.getsockname()[:2]
        self.log(
            "info",
            "listening",
            host=host,
            port=port,
            workers=self.workers,
            pid=os.getpid(),
            timeout_ms=round(self.timeout * 1000),
            max_body_bytes=self.max_body,
            max_inflight_bytes=self.max_inflight,
            max_decode_bytes=self.budget.limit,
        )
        threading.Thread(target=self._load, name="loader", daemon=True).start()
        await self.stop.wait()
        server.close()  # no new connections
        if self.exit_code is not None:
            return self.exit_code
        return await self._drain()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        self.log("error", "loop_error", message=context.get("message"), error=repr(error) if error else None)

    def _on_signal(self) -> None:
        self.signals += 1
        if self.signals > 1:
            self.log("warning", "stopped", reason="second signal during drain", exit_code=EXIT_FORCED)
            os._exit(EXIT_FORCED)  # the drain is what would otherwise hold the exit up
        self.stop.set()

    def _load(self) -> None:
        """In a thread: the workers' interpreters and the self-test, then ready (or exit 3)."""
        from .app import run_self_test

        try:
            sessions = load_sessions(self.root, self.manifest, self.workers, self.threads, self.max_pixels)
            result = run_self_test(sessions[0])
            # First invokes are slow (lazy allocations): take that hit in every worker before traffic.
            feeds = sessions[0].selftest_feeds()
            for session in sessions[1:]:
                session.infer(feeds)
        except ModelLoadError as exc:
            self.log("error", "model_load_failed", error=str(exc), exit_code=EXIT_MODEL)
            self.loop.call_soon_threadsafe(self._fail, EXIT_MODEL)
            return
        except Exception as exc:  # a damaged bundle: say so in the log, and exit rather than hang
            self.log("error", "load_failed", error=f"{type(exc).__name__}: {exc}", exit_code=EXIT_INTERNAL)
            self.loop.call_soon_threadsafe(self._fail, EXIT_INTERNAL)
            return
        self.loop.call_soon_threadsafe(
            self._loaded, Pool(sessions, on_done=self._job_done, budget=self.budget), result
        )

    def _fail(self, code: int) -> None:
        self.exit_code = code
        self.stop.set()

    def _loaded(self, pool: Pool, result: dict[str, Any]) -> None:
        self.pool = pool
        if result["problems"]:
            self.not_ready = "self-test failed: " + "; ".join(result["problems"])
            self.log("error", "self_test_failed", problems=result["problems"])
            return
        self.ready = True
        self.log("info", "ready", self_test=result, workers=self.workers)

    def _job_done(self, job: Job) -> None:
        """In a worker thread."""
        self.metrics.observe_inference(job)
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting anyway
            self.loop.call_soon_threadsafe(_resolve, job.waiter)

    async def _drain(self) -> int:
        """No new connections, idle ones closed, in-flight requests answered, then exit 0."""
        self.draining = True
        busy = 0
        for conn in list(self.conns):
            if conn.busy:
                busy += 1
            elif conn.transport is not None:
                conn.transport.close()
        self.log("info", "draining", in_flight=busy)
        # Every request in flight ends within the read timeout + the inference timeout (+ sending).
        limit = self.read_timeout * 2 + self.timeout + 1.0
        if self.conns:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), limit)
        if self.pool is not None:
            await self.loop.run_in_executor(None, self.pool.close, 1.0)
        self.log("info", "stopped", reason="signal", abandoned_connections=len(self.conns), exit_code=EXIT_OK)
        return EXIT_OK

    # --- connections ---------------------------------------------------------------------------
    def admit(self, conn: Connection) -> bool:
        if len(self.conns) >= MAX_CONNECTIONS or self.draining:
            self.metrics.count("?", 503, None)
            return False
        self.conns.add(conn)
        self.metrics.add_connections(1)
        return True

    def forget(self, conn: Connection) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            self.metrics.add_connections(-1)
        if not self.conns:
            self.all_closed.set()

    def count(self, method: str, path: str, status: int, duration: float | None, peer: str) -> None:
        self.metrics.count(path, status, duration if path == "/v1/infer" and status == 200 else None)
        if self.access_log or status >= 400:
            ms = round(duration * 1000, 3) if duration is not None else None
            level = "warning" if status >= 500 else "info"
            self.log(level, "request", method=method, path=path[:200], status=status, ms=ms, peer=peer)

    # --- requests ------------------------------------------------------------------------------
    def route(self, req: Request) -> None:
        methods = ROUTES.get(req.path)
        if methods is None:
            raise HTTPError(404, "not_found", f"no route {req.path[:200]!r}", close=_has_body(req))
        if req.method not in methods:
            allowed = ", ".join(methods)
            message = f"{req.path} takes {allowed}"
            raise HTTPError(405, "method_not_allowed", message, _has_body(req), f"Allow: {allowed}\r\n")

    async def handle(self, req: Request) -> Answer:
        """The answer to a request read in full."""
        path = req.path
        if path == "/v1/infer":
            return await self._infer(req)
        if path == "/healthz":
            return 200, {"status": "ok"}, "", False
        if path == "/readyz":
            if self.ready:
                return 200, {"status": "ready"}, "", False
            return 503, RequestError(503, "not_ready", self.not_ready).body(), "", False
        if path == "/metrics":
            return 200, self.metrics.render(self.ready, self.body_bytes, self.budget).encode(), "", False
        return 200, self.manifest, "", False  # /v1/info

    async def _infer(self, req: Request) -> Answer:
        pool = self.pool
        if not self.ready or pool is None:
            return 503, RequestError(503, "not_ready", self.not_ready).body(), "", False
        try:
            data = req.body
            ctype = req.headers.get("content-type", "")
            if ctype.lower().startswith("multipart/form-data"):
                data = multipart_image(data, ctype)
            if not data:
                raise RequestError(400, "empty_body", "no image in the request body")
            delay = 0.0
            if self.test_hooks and TEST_DELAY_HEADER in req.headers:
                try:
                    delay = float(req.headers[TEST_DELAY_HEADER]) / 1000.0
                except ValueError:
                    raise RequestError(400, "bad_request", "bad test delay") from None
            threshold = score_threshold(req.query, self.manifest)
        except RequestError as exc:
            return exc.status, exc.body(), "", False
        job = Job(data, delay, threshold)
        job.waiter = waiter = self.loop.create_future()
        timer = self.loop.call_at(req.started + self.timeout, _expire, waiter)
        self.metrics.add_in_flight(1)
        try:
            pool.submit(job)
            await waiter
        except TimeoutError:
            job.cancelled = True  # the worker skips it if it has not started; never waited for
            late = RequestError(504, "timeout", f"no answer within {round(self.timeout * 1000)} ms")
            return 504, late.body(), "", False
        finally:
            timer.cancel()
            self.metrics.add_in_flight(-1)
        if job.error is not None:
            if job.error.status >= 500:
                self.log("error", "inference_failed", error=job.error.message)
            return job.error.status, job.error.body(), "", False
        assert job.result is not None
        return 200, job.result, "", False


def score_threshold(query: str, manifest: dict[str, Any]) -> float | None:
    """``?score_threshold=S`` (detection models): S, or None when the query does not give it."""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name != "score_threshold":
            continue
        if not is_detection(manifest):
            raise RequestError(400, "bad_request", "score_threshold is for detection models only")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise RequestError(400, "bad_request", f"score_threshold must be a number, got {value[:40]!r}")
        return number
    return None


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _has_body(req: Request) -> bool:
    return req.chunked or req.length > 0


def _listen(host: str, port: int) -> socket.socket:
    # An ASCII host as bytes: a str goes through the "idna" codec, which a lean binary may not carry.
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    family, kind, proto, _, address = socket.getaddrinfo(
        name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def check_options(opts: argparse.Namespace) -> str | None:
    """The first problem with the serving options, or None."""
    if opts.workers is not None and opts.workers < 1:
        return "--workers must be >= 1"
    if not 0 <= opts.port <= 65535:
        return "--port must be 0..65535"
    for name in (
        "timeout_ms",
        "read_timeout_ms",
        "max_body_mb",
        "max_inflight_mb",
        "max_megapixels",
        "max_decode_mb",
    ):
        if getattr(opts, name) <= 0:
            return f"--{name.replace('_', '-')} must be > 0"
    if opts.max_inflight_mb < opts.max_body_mb:
        return "--max-inflight-mb must be >= --max-body-mb (a single largest body must fit)"
    return None


def main(prog: str, root: Bundle, manifest: dict[str, Any], opts: argparse.Namespace) -> int:
    log = Log()
    problem = check_options(opts)
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return EXIT_BAD_ARGS
    _log_everything_as_json(log)
    if getattr(opts, "threads_capped", ""):
        log("warning", "threads_capped", message=opts.threads_capped)
    try:
        server = Server(opts, root, manifest, log)
    except OSError as exc:
        log("error", "listen_failed", host=opts.host, port=opts.port, error=str(exc), exit_code=EXIT_BAD_ARGS)
        return EXIT_BAD_ARGS
    return server.run()


def _log_everything_as_json(log: Log) -> None:
    """Python's own complaints (warnings, asyncio's logger) as JSON lines too, not free text."""
    import logging
    import warnings

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log(record.levelname.lower(), "python_log", logger=record.name, message=record.getMessage())

    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(Handler())
    asyncio_logger.propagate = False

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        where = f"{filename}:{lineno}"
        log("warning", "python_warning", category=category.__name__, message=str(message), at=where)

    warnings.showwarning = show
