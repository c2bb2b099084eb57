"""``APP --batch``: JSON lines in on stdin, one JSON result line out on stdout per request, in order.

A request is ``{"path": "img.png"}`` or ``{"image_b64": "..."}``, with an optional ``"id"`` echoed
back. Its result is the CLI's JSON (with ``"image"`` for a path), or, when it fails,
``{"error": CODE, "message": ..., "status": N, "line": N}`` with the same codes and statuses as the
HTTP API; the stream always goes on. Blank lines are skipped. Exit 0 when every request succeeded,
2 when some failed, 3 when the model cannot be loaded.

Requests run on ``--workers`` interpreters (default 1) while a writer thread prints the results in
input order as they complete, flushing each line: the mode works both for a file piped through and
as a co-process that writes one request and waits for its answer.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import queue
import sys
import threading
from typing import TYPE_CHECKING, Any

from .exits import EXIT_BAD_INPUT, EXIT_MODEL, EXIT_OK
from .memory import DecodeBudget
from .model import ModelLoadError
from .payload import Bundle
from .preprocess import max_pixels
from .workers import Job, Pool, RequestError, load_sessions

if TYPE_CHECKING:
    from .manifest import Manifest


def main(prog: str, root: Bundle, manifest: Manifest, opts: argparse.Namespace) -> int:
    """``opts`` as checked by app.check_options."""
    workers = opts.workers or 1
    try:
        sessions = load_sessions(root, manifest, workers, opts.threads or 1, max_pixels(opts.max_megapixels))
    except ModelLoadError as exc:
        print(f"{prog}: error: cannot load the bundled model: {exc}", file=sys.stderr)
        return EXIT_MODEL
    for session in sessions:
        session.score_threshold = opts.score_threshold
    pool = Pool(sessions, budget=DecodeBudget(opts.max_decode_mb))
    # Bounded: reading stops while the writer is behind, so memory stays flat on endless input.
    pending: Pending = queue.Queue(maxsize=workers * 4)
    writer = _Writer(pending)
    writer.start()
    # base64 is 4/3 of the image, plus the JSON around it.
    max_line = int(opts.max_body_mb * 1024 * 1024 * 4 / 3) + 4096
    try:
        for number, line in enumerate(_lines(sys.stdin.buffer, max_line), 1):
            if line is not None and not line.strip():
                continue
            job = _job(line, number, pending)
            if job is not None:
                pool.submit(job)
            if writer.broken:
                break
    finally:
        pending.put(None)
        writer.join()
        pool.close(timeout_s=1.0)
    return EXIT_BAD_INPUT if writer.failed else EXIT_OK


Pending = queue.Queue[tuple[dict[str, Any], Job, int] | None]  # (echoed fields, job, line number)


def _job(line: bytes | None, number: int, pending: Pending) -> Job | None:
    """Queue the request for writing; return its job when it still has to run."""
    echo: dict[str, Any] = {}
    try:
        if line is None:
            raise RequestError(413, "body_too_large", "request line too long")
        data = parse_request(line, echo)
    except RequestError as exc:
        failed = Job(b"")
        failed.fail(exc)
        pending.put((echo, failed, number))
        return None
    job = Job(data)
    pending.put((echo, job, number))
    return job


def parse_request(line: bytes, echo: dict[str, Any]) -> bytes | str:
    """The image (bytes) or path (str) a request line asks for; ``echo`` gets what the result
    repeats (``id``, ``image``). RequestError when the line is not a valid request."""
    try:
        request = json.loads(line)
    except ValueError as exc:  # also UnicodeDecodeError
        raise RequestError(400, "bad_request", f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError(400, "bad_request", "expected a JSON object")
    if "id" in request:
        echo["id"] = request["id"]
    if ("path" in request) == ("image_b64" in request):
        raise RequestError(400, "bad_request", 'give exactly one of "path" or "image_b64"')
    if "path" in request:
        path = request["path"]
        if not isinstance(path, str) or not path:
            raise RequestError(400, "bad_request", '"path" must be a non-empty string')
        echo["image"] = path
        return path
    encoded = request["image_b64"]
    if not isinstance(encoded, str):
        raise RequestError(400, "bad_request", '"image_b64" must be a string')
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "bad_request", '"image_b64" is not valid base64') from None
    if not data:
        raise RequestError(400, "empty_body", '"image_b64" is empty')
    return data


def _lines(stream: Any, limit: int) -> Any:
    """Lines of at most ``limit`` bytes; None (after skipping the rest) for a longer one."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


class _Writer(threading.Thread):
    def __init__(self, pending: Pending) -> None:
        super().__init__(name="writer", daemon=True)
        self.pending = pending
        self.failed = False
        self.broken = False  # stdout closed by the reader of our results

    def run(self) -> None:
        while (item := self.pending.get()) is not None:
            echo, job, number = item
            job.done.wait()
            if job.error is not None:
                self.failed = True
                result = {**echo, **job.error.body(), "line": number}
            else:
                assert job.result is not None
                result = {**echo, **job.result}
            if self.broken:
                continue
            try:
                sys.stdout.write(json.dumps(result, separators=(",", ":")) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                self.broken = True
                # Python would report the same error again when it flushes stdout at exit.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
