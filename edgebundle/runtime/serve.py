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
import os
import signal
import socket
import threading
import time
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
from .shared import BODY_BYTES, BUSY, CONNECTIONS, Shared, SharedDecodeBudget
from .supervisor import Acceptor, Child, preload, supervise
from .supervisor import listen as _listen
from .workers import (
    Job,
    Pool,
    RequestError,
    load_sessions,
    score_threshold,
    test_hooks_enabled,
)

if TYPE_CHECKING:
    from .manifest import Manifest
    from .workers import Budget

MAX_CONNECTIONS = 512  # the whole server's
# A worker process runs an inference in its event loop's thread (no hand-over to its interpreter's
# thread and back) while inferences take less than this on average, so that the loop (/healthz,
# timeouts) is never held up longer; slower ones, and the test hook's delays, go to the thread.
INLINE_MAX_S = 0.02

GET_METHODS = ("GET", "HEAD")
ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/infer": ("POST",),
    "/healthz": GET_METHODS,
    "/readyz": GET_METHODS,
    "/metrics": GET_METHODS,
    "/v1/info": GET_METHODS,
}
TEST_DELAY_HEADER = "x-ebrt-test-delay-ms"
SLOW_WORKER_ENV = "EDGEBUNDLE_TEST_SLOW_WORKER_MS"


class Server:
    def __init__(
        self,
        opts: argparse.Namespace,
        root: Bundle,
        manifest: Manifest,
        log: Log,
        notifier: Notifier,
        listener: socket.socket,
        child: Child | None = None,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.log = log
        self.notifier = notifier  # systemd's notifications (sdnotify.py); does nothing outside systemd
        self.child = child  # one of the worker processes of supervisor.py (None: the only process)
        self.workers: int = child.count if child else opts.workers or len(os.sched_getaffinity(0))
        self.threads: int = opts.threads or 1
        self.max_pixels = max_pixels(opts.max_megapixels)
        self.shared = child.shared if child else Shared([*ROUTES, "other"], 1, processes=False)
        self.slot = child.slot if child else 0
        self.budget: Budget = (
            SharedDecodeBudget(opts.max_decode_mb, self.shared, self.slot)
            if child
            else DecodeBudget(opts.max_decode_mb)
        )
        self.timeout = opts.timeout_ms / 1000.0
        self.read_timeout = opts.read_timeout_ms / 1000.0
        self.max_body = int(opts.max_body_mb * 1024 * 1024)
        self.max_inflight = int(opts.max_inflight_mb * 1024 * 1024)
        self.access_log: bool = opts.access_log
        self.test_hooks = test_hooks_enabled()
        self.metrics = Metrics(manifest, self.workers, ROUTES, self.shared, self.slot)
        if child:
            self.shared.reset(self.slot, os.getpid())
        self.conns: set[Connection] = set()
        self.draining = False
        self.loaded = False  # this process: the model loaded and the self-test passed
        self.not_ready = "loading the model"
        self.pool: Pool | None = None
        self.exit_code: int | None = None
        self.signals = 0
        self.listener = listener
        self.job_s = INLINE_MAX_S  # a moving average of the time of a whole inference job
        host, port = self.listener.getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.loop = asyncio.new_event_loop()
        self.acceptor = (
            Acceptor(self.loop, listener, self.shared, self.slot, lambda: Connection(self), log)
            if child
            else None
        )
        self.stop = asyncio.Event()
        self.all_closed = asyncio.Event()

    @property
    def ready(self) -> bool:
        """What /readyz says: this process is ready and, with worker processes, all of them were."""
        return self.loaded and (self.child is None or self.shared.ready)

    @property
    def body_bytes(self) -> int:
        """Request body bytes granted to connections, the whole server's."""
        return int(self.shared.total(BODY_BYTES))

    def grant_body(self, n: int) -> bool:
        """In the event loop's thread, as release_body."""
        return self.shared.take(self.slot, BODY_BYTES, n, self.max_inflight)

    def release_body(self, n: int) -> None:
        self.shared.give(self.slot, BODY_BYTES, n)

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
        server: asyncio.Server | None = None
        if self.child is None:
            server = await loop.create_server(lambda: Connection(self), sock=self.listener, backlog=1024)
            log_listening(self.log, self.listener, self.workers, self)
            self.notifier.status(f"loading the model; listening on {self.address}")
            if self.notifier.watchdog_s is not None:
                self._watchdog()
        else:
            # The first workers answer /healthz (and 503 on /readyz) while they load; a replacement
            # accepts only once it is ready.
            if not self.child.replacement:
                self._accept(True)
            if self.child.heartbeat_s is not None:
                self._heartbeat(self.child.heartbeat_s)
        threading.Thread(target=self._load, name="loader", daemon=True).start()
        await self.stop.wait()
        if server is not None:
            server.close()  # no new connections
        self._accept(False)
        if self.exit_code is not None:
            return self.exit_code
        return await self._drain()

    def _accept(self, on: bool) -> None:
        if self.acceptor is not None:
            self.acceptor.start() if on and not self.draining else self.acceptor.close()

    def _heartbeat(self, every_s: float) -> None:
        """Tell the supervisor this loop is alive (it pings systemd's watchdog only while all are)."""
        assert self.child is not None
        self.child.report("H")
        self.loop.call_later(every_s, self._heartbeat, every_s)

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
        if self.child is not None and self.signals > 1 and os.getppid() == self.child.parent:
            return  # the supervisor relays the signal sent to it; a second one it handles itself
        if self.signals > 1:
            self.log("warning", "stopped", reason="second signal during drain", exit_code=EXIT_FAILED)
            os._exit(EXIT_FAILED)  # the drain is what would otherwise hold the exit up
        self.stop.set()

    def _load(self) -> None:
        """In a thread: the workers' interpreters and the self-test, then ready (or exit 3)."""
        try:
            if self.test_hooks and self.child and self.child.slot == self.child.count - 1:
                # Test-only: the last worker process loads late (READY=1 must wait for it).
                time.sleep(float(os.environ.get(SLOW_WORKER_ENV) or 0) / 1000.0)
            count = 1 if self.child else self.workers
            sessions = load_sessions(self.root, self.manifest, count, self.threads, self.max_pixels)
            started = time.perf_counter()
            result = run_self_test(sessions[0])
            self.job_s = time.perf_counter() - started  # the first estimate: the self-test's
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
            self._loaded, Pool(sessions, self._job_done, self.budget, self._busy), result
        )

    def _fail(self, code: int, status: str) -> None:
        if self.child is not None:
            self.child.report("X", f"{code} {status}")  # the supervisor tells systemd and exits
        self.notifier.status(f"{status} (exit {code})")
        self.exit_code = code
        self.stop.set()

    def _loaded(self, pool: Pool, result: dict[str, Any]) -> None:
        self.pool = pool
        child = self.child
        if result["problems"]:
            self.not_ready = "self-test failed: " + "; ".join(result["problems"])
            self.log("error", "self_test_failed", problems=result["problems"])
            if self.notifier.enabled or (child is not None and child.under_systemd):
                # Under systemd a release that can never become ready fails its start at once
                # (Restart=, a deploy's rollback) instead of after TimeoutStartSec (docs/serving.md).
                self._fail(EXIT_FAILED, self.not_ready)
            elif child is not None:
                child.report("T", self.not_ready)
            return
        self.loaded = True  # /readyz answers 200 from here on (with worker processes: once all are)
        if child is not None:
            self.log("info", "worker_ready", slot=child.slot, self_test=result)
            child.report("R")
            self._accept(True)
            return
        self.log("info", "ready", self_test=result, workers=self.workers)
        self.notifier.ready(f"ready; serving on {self.address} with {self.workers} workers")

    def _busy(self, delta: int) -> None:
        """Jobs queued or running in the interpreters' threads (the accepting balance)."""
        self.shared.give(self.slot, BUSY, -delta)

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
        if self.child is None:
            self.log("info", "draining", in_flight=busy)
            self.notifier.stopping(f"draining: {busy} requests in flight")
        # Every request in flight ends within the read timeout + the inference timeout (+ sending).
        limit = self.read_timeout * 2 + self.timeout + 1.0
        if self.conns:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), limit)
        if self.pool is not None:
            await self.loop.run_in_executor(None, self.pool.close, 1.0)
        event = "stopped" if self.child is None else "worker_stopped"
        self.log("info", event, reason="signal", abandoned_connections=len(self.conns), exit_code=EXIT_OK)
        return EXIT_OK

    # --- connections ---------------------------------------------------------------------------
    def admit(self, conn: Connection) -> bool:
        if self.shared.total(CONNECTIONS) >= MAX_CONNECTIONS or self.draining:
            self.metrics.count("?", 503, None)
            return False
        self.conns.add(conn)
        self.all_closed.clear()  # set again when the last connection closes (a drain waits for it)
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
        if self.child is not None and not delay and self.job_s < INLINE_MAX_S and pool.run_here(job):
            self.metrics.observe_inference(job)
            return self._answer(job)
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
        return self._answer(job)

    def _answer(self, job: Job) -> Answer:
        self.job_s += (job.run_s - self.job_s) / 8
        if job.error is not None:
            if job.error.status >= 500:
                self.log("error", "inference_failed", error=job.error.message)
            return job.error.status, job.error.body(), "", False
        assert job.result is not None
        return 200, job.result, "", False


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def log_listening(log: Log, listener: socket.socket, workers: int, server: Server | None) -> None:
    host, port = listener.getsockname()[:2]
    limits = {}
    if server is not None:
        limits = {
            "timeout_ms": round(server.timeout * 1000),
            "max_body_bytes": server.max_body,
            "max_inflight_bytes": server.max_inflight,
            "max_decode_bytes": server.budget.limit,
        }
    log("info", "listening", host=host, port=port, workers=workers, pid=os.getpid(), **limits)


def main(prog: str, root: Bundle, manifest: Manifest, opts: argparse.Namespace) -> int:
    """``opts`` as checked by app.check_options."""
    log = Log()
    log_everything_as_json(log)
    notifier = Notifier(log)  # first: it takes NOTIFY_SOCKET & co. out of the environment
    if getattr(opts, "threads_capped", ""):
        log("warning", "threads_capped", message=opts.threads_capped)
    try:
        listener = _listen(opts.host, opts.port)
    except OSError as exc:
        log(
            "error", "listen_failed", host=opts.host, port=opts.port, error=str(exc), exit_code=EXIT_BAD_INPUT
        )
        notifier.status(f"cannot listen on {opts.host}:{opts.port}: {exc} (exit {EXIT_BAD_INPUT})")
        return EXIT_BAD_INPUT
    workers = opts.workers or len(os.sched_getaffinity(0))
    try:
        if workers == 1:
            return Server(opts, root, manifest, log, notifier, listener).run()
        log.pid = os.getpid()
        listener.listen(1024)
        log_listening(log, listener, workers, None)
        preload(manifest)
        quiet = Notifier(log, environ={})  # a worker speaks to systemd through the supervisor only

        def start(child: Child) -> int:
            return Server(opts, root, manifest, log, quiet, listener, child).run()

        return supervise(workers, start, log, notifier, listener, [*ROUTES, "other"])
    finally:
        notifier.close()
