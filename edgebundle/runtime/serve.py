"""``APP --serve``: the bundled model behind a small HTTP/1.1 server (standard library only).

Routes: ``POST /v1/infer`` (raw image body or multipart/form-data; the CLI's JSON), ``GET /healthz``
(the process answers), ``GET /readyz`` (model loaded and the self-test passed), ``GET /metrics``
(Prometheus text), ``GET /v1/info`` (the manifest). Every error is a JSON body
``{"error": CODE, "message": ..., "status": N}``; logs are one JSON object per line on stderr.

This module is the server and the mode's entry (``main``); the pieces are beside it: HTTP/1.1
framing and multipart (http1.py), one client connection (connection.py), the Prometheus metrics
(metrics.py), the JSON logs (jsonlog.py), systemd's readiness, watchdog and stopping notifications
(sdnotify.py: READY=1 when /readyz turns 200, WATCHDOG=1 from the event loop, STOPPING=1 at a drain).

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
import math
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

from .connection import Answer, Connection, expire
from .exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERNAL, EXIT_MODEL, EXIT_OK
from .http1 import HTTPError, Request, has_body, multipart_image
from .jsonlog import Log, log_everything_as_json
from .memory import DecodeBudget
from .metrics import Metrics
from .model import ModelLoadError
from .payload import Bundle
from .preprocess import max_pixels
from .sdnotify import Notifier
from .selftest import run_self_test
from .session import is_detection
from .workers import (
    Job,
    Pool,
    RequestError,
    load_sessions,
    test_hooks_enabled,
)

if TYPE_CHECKING:
    from .manifest import Manifest

MAX_CONNECTIONS = 512

GET_METHODS = ("GET", "HEAD")
ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/infer": ("POST",),
    "/healthz": GET_METHODS,
    "/readyz": GET_METHODS,
    "/metrics": GET_METHODS,
    "/v1/info": GET_METHODS,
}
TEST_DELAY_HEADER = "x-ebrt-test-delay-ms"


class Server:
    def __init__(
        self,
        opts: argparse.Namespace,
        root: Bundle,
        manifest: Manifest,
        log: Log,
        notifier: Notifier,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.log = log
        self.notifier = notifier  # systemd's notifications (sdnotify.py); does nothing outside systemd
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
        self.metrics = Metrics(manifest, self.workers, ROUTES)
        self.conns: set[Connection] = set()
        self.draining = False
        self.ready = False
        self.not_ready = "loading the model"
        self.pool: Pool | None = None
        self.exit_code: int | None = None
        self.signals = 0
        self.listener = _listen(opts.host, opts.port)
        host, port = self.listener.getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
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
        self.notifier.status(f"loading the model; listening on {self.address}")
        if self.notifier.watchdog_s is not None:
            self._watchdog()
        threading.Thread(target=self._load, name="loader", daemon=True).start()
        await self.stop.wait()
        server.close()  # no new connections
        if self.exit_code is not None:
            return self.exit_code
        return await self._drain()

    def _watchdog(self) -> None:
        """Ping systemd's watchdog from the event loop itself: a wedged loop stops pinging, and
        systemd restarts the service."""
        assert self.notifier.watchdog_s is not None
        self.notifier.watchdog()
        self.loop.call_later(self.notifier.watchdog_s, self._watchdog)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        self.log("error", "loop_error", message=context.get("message"), error=repr(error) if error else None)

    def _on_signal(self) -> None:
        self.signals += 1
        if self.signals > 1:
            self.log("warning", "stopped", reason="second signal during drain", exit_code=EXIT_FAILED)
            os._exit(EXIT_FAILED)  # the drain is what would otherwise hold the exit up
        self.stop.set()

    def _load(self) -> None:
        """In a thread: the workers' interpreters and the self-test, then ready (or exit 3)."""
        try:
            sessions = load_sessions(self.root, self.manifest, self.workers, self.threads, self.max_pixels)
            result = run_self_test(sessions[0])
            # First invokes are slow (lazy allocations): take that hit in every worker before traffic.
            feeds = sessions[0].selftest_feeds()
            for session in sessions[1:]:
                session.infer(feeds)
        except ModelLoadError as exc:
            self.log("error", "model_load_failed", error=str(exc), exit_code=EXIT_MODEL)
            self.loop.call_soon_threadsafe(self._fail, EXIT_MODEL, f"model load failed: {exc}")
            return
        except Exception as exc:  # a damaged bundle: say so in the log, and exit rather than hang
            error = f"{type(exc).__name__}: {exc}"
            self.log("error", "load_failed", error=error, exit_code=EXIT_INTERNAL)
            self.loop.call_soon_threadsafe(self._fail, EXIT_INTERNAL, f"load failed: {error}")
            return
        self.loop.call_soon_threadsafe(
            self._loaded, Pool(sessions, on_done=self._job_done, budget=self.budget), result
        )

    def _fail(self, code: int, status: str) -> None:
        self.notifier.status(f"{status} (exit {code})")
        self.exit_code = code
        self.stop.set()

    def _loaded(self, pool: Pool, result: dict[str, Any]) -> None:
        self.pool = pool
        if result["problems"]:
            self.not_ready = "self-test failed: " + "; ".join(result["problems"])
            self.log("error", "self_test_failed", problems=result["problems"])
            if self.notifier.enabled:
                # Under systemd a release that can never become ready fails its start at once
                # (Restart=, a deploy's rollback) instead of after TimeoutStartSec (docs/serving.md).
                self._fail(EXIT_FAILED, self.not_ready)
            return
        self.ready = True  # /readyz answers 200 from here on
        self.log("info", "ready", self_test=result, workers=self.workers)
        self.notifier.ready(f"ready; serving on {self.address} with {self.workers} workers")

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
        self.notifier.stopping(f"draining: {busy} requests in flight")
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
            raise HTTPError(404, "not_found", f"no route {req.path[:200]!r}", close=has_body(req))
        if req.method not in methods:
            allowed = ", ".join(methods)
            message = f"{req.path} takes {allowed}"
            raise HTTPError(405, "method_not_allowed", message, has_body(req), f"Allow: {allowed}\r\n")

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
        return 200, dict(self.manifest), "", False  # /v1/info

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
        timer = self.loop.call_at(req.started + self.timeout, expire, waiter)
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


def score_threshold(query: str, manifest: Manifest) -> float | None:
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


def _listen(host: str, port: int) -> socket.socket:
    # An ASCII host as bytes: a str goes through the "idna" codec, which a lean binary may not carry.
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    try:
        found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        # A device without /etc/hosts (a bare root) cannot look up "localhost": it is loopback anyway
        # (RFC 6761, what systemd's nss-myhostname answers). Any other name: the error, as it is.
        if host.lower().rstrip(".") != "localhost":
            raise
        found = socket.getaddrinfo(b"127.0.0.1", port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def main(prog: str, root: Bundle, manifest: Manifest, opts: argparse.Namespace) -> int:
    """``opts`` as checked by app.check_options."""
    log = Log()
    log_everything_as_json(log)
    notifier = Notifier(log)  # first: it takes NOTIFY_SOCKET & co. out of the environment
    if getattr(opts, "threads_capped", ""):
        log("warning", "threads_capped", message=opts.threads_capped)
    try:
        server = Server(opts, root, manifest, log, notifier)
    except OSError as exc:
        log(
            "error", "listen_failed", host=opts.host, port=opts.port, error=str(exc), exit_code=EXIT_BAD_INPUT
        )
        notifier.status(f"cannot listen on {opts.host}:{opts.port}: {exc} (exit {EXIT_BAD_INPUT})")
        return EXIT_BAD_INPUT
    try:
        return server.run()
    finally:
        notifier.close()
