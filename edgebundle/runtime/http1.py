"""HTTP/1.1 framing for ``--serve``: request heads, how a body is delimited (RFC 9112), the
image inside a multipart/form-data body, status reasons and the Date header. Pure functions on bytes:
the connection (connection.py) does the reading and writing."""

from __future__ import annotations

import time

from .workers import RequestError

MAX_HEAD_BYTES = 32 * 1024

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


class HTTPError(Exception):
    """A request answered with an error; ``close`` when the connection cannot be reused after it."""

    def __init__(self, status: int, code: str, message: str, close: bool = False, extra: str = "") -> None:
        super().__init__(message)
        self.error = RequestError(status, code, message)
        self.close = close
        self.extra = extra  # header lines, each ending in CRLF


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


def has_body(req: Request) -> bool:
    return req.chunked or req.length > 0
