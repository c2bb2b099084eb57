"""``--serve --workers N`` (N > 1): N worker processes sharing the listening socket, and this
process, their supervisor.

Why processes: under the GIL one process answers at most one core's worth of requests (the Python
around an inference, HTTP included, holds it); a worker process per core scales with the cores. The
parent binds the socket, imports what the workers need, then forks them (no thread and no event loop
exists yet, so each worker starts clean and the imported pages stay shared). Each worker is the
one-process server (serve.py) with one interpreter, accepting on the shared socket.

The supervisor: relays SIGTERM/SIGINT (a drain) and a second signal (exit 1 at once); replaces a
worker that dies (after a backoff growing with repeated deaths); exits with a worker's code when the
model cannot be loaded or the self-test fails under systemd, or when replacements keep failing before
they are ready (MAX_FAILED_STARTS in a row); speaks to systemd: READY=1 when every worker is ready,
WATCHDOG=1 only while every worker's event loop reports in, STOPPING=1 at a drain. Workers report
over a pipe each, one line a message (Child.report). Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .exits import EXIT_FAILED, EXIT_INTERNAL, EXIT_OK
from .jsonlog import Log
from .sdnotify import Notifier
from .session import is_detection
from .shared import ACCEPTING, BUSY, CONNECTIONS, IN_FLIGHT, PID, Shared

if TYPE_CHECKING:
    from .manifest import Manifest

MAX_FAILED_STARTS = 3  # replacements in a row that die before being ready: give up with their code
BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)  # before replacing a worker, by deaths in the last minute
_PR_SET_PDEATHSIG = 1
# A worker process busier than another waits this long before it accepts a new connection itself;
# longer when its interpreter has more jobs than another's: a connection taken then waits behind them
# (a slow inference: seconds), while the other worker may only be slow to wake on a loaded machine
# (50 ms was not always enough on a 2-core CI machine under a full test run).
ACCEPT_DEFER_S = 0.002
BUSY_DEFER_S = 0.25


def preload(manifest: Manifest) -> None:
    """Import now what the workers would each import on their first request, so that they share
    these pages instead of each loading its own copy."""
    from PIL import Image

    importlib.import_module(manifest["interpreter"]["module"])
    Image.preinit()
    if is_detection(manifest):
        importlib.import_module(f"{__package__}.detection")


def supervise(
    count: int,
    start: Callable[[Child], int],
    log: Log,
    notifier: Notifier,
    listener: socket.socket,
    paths: Sequence[str],
) -> int:
    """Fork ``count`` workers, each running ``start`` (a Server), and supervise them until the end."""
    host, port = listener.getsockname()[:2]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    notifier.status(f"loading the model; listening on {address}")
    shared = Shared(paths, count, processes=True)
    return Supervisor(count, start, log, notifier, shared, address, listener.fileno()).run()


def listen(host: str, port: int) -> socket.socket:
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


class Acceptor:
    """A worker's side of the shared listening socket: the least busy worker takes a connection
    (jobs queued or running in its interpreter's thread count twice, connections once); a busier
    one leaves it to the others for ACCEPT_DEFER_S (BUSY_DEFER_S when its interpreter has more jobs
    than another's), then takes it if still nobody has. asyncio's own accepting would
    let whichever worker wakes first take up to 100 connections at once."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        shared: Shared,
        slot: int,
        protocol: Callable[[], asyncio.Protocol],
        log: Log,
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.shared = shared
        self.slot = slot
        self.protocol = protocol
        self.log = log
        self.on = False
        self.defer_until = 0.0  # after deferring, it accepts at once until then

    def start(self) -> None:
        if not self.on and self.listener.fileno() >= 0:
            self.on = True
            self.loop.add_reader(self.listener.fileno(), self._ready)
            self.shared.words[self.shared.base(self.slot) + ACCEPTING] = 1.0

    def stop(self) -> None:
        if self.on:
            self.on = False
            self.loop.remove_reader(self.listener.fileno())
            self.shared.words[self.shared.base(self.slot) + ACCEPTING] = 0.0

    def _load(self, slot: int) -> float:
        words, base = self.shared.words, self.shared.base(slot)
        return 2 * words[base + BUSY] + words[base + CONNECTIONS]

    def _ready(self) -> None:
        now = self.loop.time()
        if now >= self.defer_until:
            words, shared = self.shared.words, self.shared
            others = [
                s
                for s in range(shared.slots)
                if s != self.slot and words[shared.base(s) + PID] and words[shared.base(s) + ACCEPTING]
            ]
            if others and self._load(self.slot) > min(self._load(s) for s in others):
                mine = words[shared.base(self.slot) + BUSY]
                busier = mine > min(words[shared.base(s) + BUSY] for s in others)
                wait = BUSY_DEFER_S if busier else ACCEPT_DEFER_S
                self.stop()
                self.defer_until = now + 2 * wait
                self.loop.call_later(wait, self._resume)
                return
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:  # out of descriptors: stop accepting for a moment
            self.log("error", "accept_failed", error=str(exc))
            self.stop()
            self.loop.call_later(0.5, self._resume)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.loop.create_task(self.loop.connect_accepted_socket(self.protocol, sock))

    def _resume(self) -> None:
        if self.defer_until >= 0:  # not stopped for good
            self.start()

    def close(self) -> None:
        """For good (a drain): no more accepting, and this process's copy of the socket closed."""
        self.stop()
        self.defer_until = -1.0
        self.listener.close()


@dataclass
class Child:
    """What a worker process knows of its place: its slot of the shared state, the supervisor's pipe,
    whether it replaces one that died (it then accepts only once it is ready), how often to tell the
    supervisor its loop is alive (None: no watchdog) and whether systemd watches (a failed self-test
    then ends the server)."""

    slot: int
    count: int
    parent: int
    report_fd: int
    replacement: bool
    heartbeat_s: float | None
    under_systemd: bool
    shared: Shared

    def report(self, kind: str, text: str = "") -> None:
        """R ready, T self-test failed (staying up), X<code> <status> about to exit, H heartbeat."""
        line = (kind + " ".join(text.splitlines()) + "\n").encode("utf-8", "replace")
        with contextlib.suppress(BlockingIOError, BrokenPipeError):  # a full pipe drops heartbeats only
            os.write(self.report_fd, line)


@dataclass
class _Worker:
    slot: int
    pid: int = 0
    fd: int = -1
    buf: bytes = b""
    started: float = 0.0
    ready: bool = False
    beat: float = 0.0
    fatal: tuple[int, str] | None = None  # (exit code, status) it announced
    restart_at: float | None = None
    replacement: bool = False
    deaths: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        count: int,
        start: Callable[[Child], int],
        log: Log,
        notifier: Notifier,
        shared: Shared,
        address: str,
        listener_fd: int,
    ) -> None:
        self.start = start
        self.log = log
        self.notifier = notifier
        self.shared = shared
        self.address = address
        self.listener_fd = listener_fd
        self.workers = [_Worker(slot) for slot in range(count)]
        self.sel = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.draining = False
        self.ready = False
        self.failed_starts = 0
        self.exit_code: int | None = None
        # Workers ping through their pipes twice per systemd ping; a worker silent for a whole
        # watchdog period stops the pings.
        self.watchdog_s = notifier.watchdog_s
        self.heartbeat_s = self.watchdog_s / 2 if self.watchdog_s is not None else None

    # --- the supervisor's loop -----------------------------------------------------------------
    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake = (wake_r, wake_w)
        gc.freeze()  # what is imported stays shared: the workers' collections do not touch (copy) it
        for worker in self.workers:
            self._fork(worker)
            if self.exit_code is not None:
                return self.exit_code
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)
        self.sel.register(wake_r, selectors.EVENT_READ, None)
        self._reap()  # a worker that died before the handler was there
        next_ping = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if self.watchdog_s is not None and now >= next_ping:
                    self._watchdog(now)
                    next_ping = now + self.watchdog_s
                for worker in self.workers:
                    if worker.restart_at is not None and now >= worker.restart_at and not self.draining:
                        worker.restart_at = None
                        self._fork(worker)
                if self.exit_code is not None:
                    return self._finish(self.exit_code)
                if self.draining and not any(w.pid for w in self.workers):
                    self.log("info", "stopped", reason="signal", exit_code=EXIT_OK)
                    return EXIT_OK
                deadlines = [w.restart_at for w in self.workers if w.restart_at is not None]
                if self.watchdog_s is not None:
                    deadlines.append(next_ping)
                timeout = max(0.0, min(deadlines) - now) if deadlines else None
                for key, _ in self.sel.select(timeout):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            while os.read(wake_r, 512):
                                pass
                    else:
                        self._read(key.data)
                self._handle_signals()
        finally:
            signal.set_wakeup_fd(-1)
            for fd in (wake_r, wake_w):
                os.close(fd)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGCHLD:
                self._reap()
            elif self.draining:
                self.log("warning", "stopped", reason="second signal during drain", exit_code=EXIT_FAILED)
                self._kill_all(signal.SIGKILL)
                os._exit(EXIT_FAILED)
            else:
                self._drain()

    def _drain(self) -> None:
        self.draining = True
        in_flight = int(self.shared.total(IN_FLIGHT))
        self.log("info", "draining", in_flight=in_flight, workers=len(self.workers))
        self.notifier.stopping(f"draining: {in_flight} requests in flight")
        self._close_listener()
        self._kill_all(signal.SIGTERM)
        for worker in self.workers:
            worker.restart_at = None

    def _close_listener(self) -> None:
        if self.listener_fd >= 0:
            os.close(self.listener_fd)
            self.listener_fd = -1

    def _kill_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signum)

    def _finish(self, code: int) -> int:
        """Stop the workers (nothing to drain: the server is failing), wait for them, return code."""
        self._close_listener()
        self._kill_all(signal.SIGKILL)
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(worker.pid, 0)
        return code

    def _watchdog(self, now: float) -> None:
        """Ping systemd only while every worker's loop reports in (a new worker gets a period)."""
        assert self.watchdog_s is not None
        live = [w for w in self.workers if w.pid]
        if all(now - max(w.beat, w.started) <= 2 * self.watchdog_s for w in live):
            self.notifier.watchdog()

    # --- workers -------------------------------------------------------------------------------
    def _fork(self, worker: _Worker) -> None:
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        replacement = worker.replacement
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = EXIT_INTERNAL
            try:
                os.close(read_fd)
                for other in self.workers:
                    if other.fd >= 0:
                        os.close(other.fd)
                signal.set_wakeup_fd(-1)
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(signum, signal.SIG_DFL)
                _die_with_parent()
                if os.getppid() != parent:
                    os._exit(EXIT_FAILED)
                os.set_blocking(write_fd, False)
                self.log.pid = os.getpid()
                child = Child(
                    worker.slot,
                    len(self.workers),
                    parent,
                    write_fd,
                    replacement,
                    self.heartbeat_s,
                    self.notifier.enabled,
                    self.shared,
                )
                code = self.start(child)
            except BaseException as exc:
                self.log("error", "worker_error", error=f"{type(exc).__name__}: {exc}", exit_code=code)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker.pid, worker.fd, worker.buf = pid, read_fd, b""
        worker.started, worker.beat, worker.ready, worker.fatal = time.monotonic(), 0.0, False, None
        self.sel.register(read_fd, selectors.EVENT_READ, worker)

    def _read(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.fd, 4096)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(worker.fd)
            os.close(worker.fd)
            worker.fd = -1
            return
        worker.buf += data
        while b"\n" in worker.buf:
            line, worker.buf = worker.buf.split(b"\n", 1)
            self._message(worker, line.decode("utf-8", "replace"))

    def _message(self, worker: _Worker, line: str) -> None:
        kind, text = line[:1], line[1:]
        if kind == "H":
            worker.beat = time.monotonic()
        elif kind == "R":
            worker.ready = True
            worker.beat = time.monotonic()
            self.failed_starts = 0
            if not self.ready and all(w.ready for w in self.workers):
                self.ready = True
                self.shared.ready = True  # /readyz answers 200 in every worker from here on
                self.log("info", "ready", workers=len(self.workers), pids=[w.pid for w in self.workers])
                self.notifier.ready(f"ready; serving on {self.address} with {len(self.workers)} workers")
        elif kind == "X":
            code, _, status = text.partition(" ")
            worker.fatal = (int(code) if code.isdigit() else EXIT_INTERNAL, status)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is None:
                continue
            if worker.fd >= 0:  # what it said last
                with contextlib.suppress(OSError):
                    while True:
                        before = len(worker.buf)
                        self._read(worker)
                        if worker.fd < 0 or len(worker.buf) == before:
                            break
            self._exited(worker, os.waitstatus_to_exitcode(status))

    def _exited(self, worker: _Worker, code: int) -> None:
        pid, worker.pid = worker.pid, 0
        self.shared.reset(worker.slot, 0)  # its gauges: nothing of it is in flight any more
        if worker.fd >= 0:
            self.sel.unregister(worker.fd)
            os.close(worker.fd)
            worker.fd = -1
        exit_code = code if code > 0 else EXIT_INTERNAL  # < 0: killed by a signal
        if self.draining:
            level = "info" if code == 0 else "warning"
            self.log(level, "worker_exited", worker_pid=pid, exit_code=code)
            return
        if worker.fatal is not None:
            fatal_code, status = worker.fatal
            self.notifier.status(f"{status} (exit {fatal_code})")
            self.exit_code = fatal_code
            return
        now = time.monotonic()
        self.log("error", "worker_died", worker_pid=pid, exit_code=code, was_ready=worker.ready)
        if not worker.ready:
            self.failed_starts += 1
            if not self.ready or self.failed_starts >= MAX_FAILED_STARTS:
                self.notifier.status(f"worker {pid} failed before it was ready (exit {exit_code})")
                self.exit_code = exit_code
                return
        worker.deaths = [t for t in worker.deaths if now - t < 60.0] + [now]
        worker.restart_at = now + BACKOFF_S[min(len(worker.deaths), len(BACKOFF_S)) - 1]
        worker.replacement = True


def _die_with_parent() -> None:
    """A worker gets SIGTERM (a drain) when its supervisor dies (Linux prctl; nothing elsewhere)."""
    with contextlib.suppress(Exception):
        prctl = ctypes.CDLL(None).prctl
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
