"""One client connection of ``--serve``: the event loop feeds it bytes; a task per connection reads
requests from its buffer with deadlines (408), caps what it buffers (flow control, body bytes in
flight: 503), hands each request to the server and writes the answer, lingering after an error so
that the client can read it. The server (serve.py) routes and answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any, Protocol

from .http1 import MAX_HEAD_BYTES, REASONS, HTTPError, Request, frame, http_date, parse_head
from .workers import RequestError

if TYPE_CHECKING:
    from .jsonlog import Log

LINGER_S = 1.0  # how long to drain unread input before closing after an error (avoids a reset)
# What a connection may buffer beyond the body it was granted before it stops reading: a request
# head (plus the one read that crossed the line: asyncio reads up to 256 KB at a time).
UNFRAMED_BYTES = MAX_HEAD_BYTES


class Host(Protocol):
    """What a connection needs of its server (serve.Server), so that the two modules do not import
    each other: its limits, its state, and the calls that admit, count, route and answer requests."""

    loop: asyncio.AbstractEventLoop
    log: Log
    read_timeout: float
    max_body: int
    max_inflight: int
    draining: bool

    def admit(self, conn: Connection) -> bool: ...

    def grant_body(self, n: int) -> bool: ...

    def release_body(self, n: int) -> None: ...

    def forget(self, conn: Connection) -> None: ...

    def count(self, method: str, path: str, status: int, duration: float | None, peer: str) -> None: ...

    def route(self, req: Request) -> None: ...

    async def handle(self, req: Request) -> Answer: ...


class _Closed(Exception):
    """The peer closed its side."""


class Connection(asyncio.Protocol):
    """One client connection: the event loop feeds ``data_received``; a task per connection reads
    requests from the buffer with deadlines and writes the answers."""

    def __init__(self, server: Host) -> None:
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
        timer = self.loop.call_at(deadline, expire, waiter)
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
        if n and not server.grant_body(n):
            raise HTTPError(
                503,
                "busy",
                f"request bodies in flight would exceed {server.max_inflight} bytes; retry",
                close=True,
                extra="Retry-After: 1\r\n",
            )
        self.granted += n

    def _release(self) -> None:
        self.server.release_body(self.granted)
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


def expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any], str, bool, bool]:
    """(status, body, extra headers, input left unread, keep-alive) for an error that closes."""
    return status, RequestError(status, code, message).body(), "", True, False


Answer = tuple[int, bytes | dict[str, Any], str, bool]  # status, body, extra headers, input unread
