"""Worker threads for ``--serve`` and ``--batch``: one Session (one interpreter) per worker, jobs in a
queue, each job's result or error handed back through an event.

Threads, not processes: the interpreter's ``invoke`` releases the GIL, so N interpreters run N
inferences at once, and everything else (one queue, one set of metrics) stays in one process. The
Python around an inference (decode, resize, JSON) still holds the GIL, which is what caps a tiny model
like the digits example; see README "Serving" for the measured numbers.

Imported only in those modes, so plain ``APP IMAGE`` and ``--self-test`` never pay for it.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from PIL import Image

from .model import ModelLoadError
from .payload import Bundle
from .preprocess import ImageError
from .session import Session

# Test-only: with EDGEBUNDLE_TEST_HOOKS=1 a request may ask its worker to sleep first (the serve mode's
# X-Ebrt-Test-Delay-Ms header), so that tests can hold a request in flight or past its timeout
# deterministically. Without the variable the header is ignored.
TEST_HOOKS_ENV = "EDGEBUNDLE_TEST_HOOKS"


class RequestError(Exception):
    """A request the service refuses: an HTTP status, a stable machine-readable code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "status": self.status}


def test_hooks_enabled() -> bool:
    return os.environ.get(TEST_HOOKS_ENV) == "1"


def limit_pixels(max_megapixels: float) -> None:
    """Refuse images over ``max_megapixels`` before they are decoded (decompression bombs).

    Pillow checks the pixel count when it opens an image, before decoding: over MAX_IMAGE_PIXELS it
    only warns (made an error here, process-wide, which is fine in the serving modes) and over twice
    that it raises DecompressionBombError. Both become 413 image_too_large in ``classify``."""
    Image.MAX_IMAGE_PIXELS = max(1, int(max_megapixels * 1_000_000))
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def classify(exc: Exception) -> RequestError:
    """The service's answer to an exception raised while preparing or running one inference."""
    if isinstance(exc, RequestError):
        return exc
    # decode() turns DecompressionBombError into ImageError "from None", which keeps it as __context__.
    if isinstance(exc, Image.DecompressionBombWarning) or isinstance(
        exc.__context__, Image.DecompressionBombError
    ):
        limit = Image.MAX_IMAGE_PIXELS or 0
        return RequestError(413, "image_too_large", f"image has more than {limit} pixels")
    if isinstance(exc, ImageError):
        # Pillow names its source in some messages; for request bodies that is a useless repr.
        return RequestError(400, "bad_image", str(exc))
    return RequestError(500, "internal", f"{type(exc).__name__}: {exc}")


class Job:
    """One inference: ``data`` is image bytes, or a path (str) read by the worker."""

    __slots__ = (
        "cancelled",
        "data",
        "delay_s",
        "done",
        "error",
        "infer_ms",
        "result",
        "score_threshold",
        "waiter",
    )

    def __init__(self, data: bytes | str, delay_s: float = 0.0, score_threshold: float | None = None) -> None:
        self.data = data
        self.delay_s = delay_s
        self.score_threshold = score_threshold  # detection models: overrides the session's threshold
        self.done = threading.Event()
        self.cancelled = False  # the requester gave up (timeout): skip it if it has not started
        self.result: dict[str, Any] | None = None
        self.error: RequestError | None = None
        self.infer_ms = 0.0
        self.waiter: Any = None  # for the serve mode's event loop: the future its request awaits

    def fail(self, error: RequestError) -> None:
        self.error = error
        self.done.set()


def run_job(session: Session, job: Job) -> None:
    """Prepare, infer and summarize one job in the calling thread; the outcome lands on the job."""
    try:
        if job.delay_s:
            time.sleep(job.delay_s)
        data = job.data
        if isinstance(data, str) and data.endswith((".npy", ".npz")):
            feeds = session.feeds_for_file(data)
        else:
            feeds = session.feeds_for_image(data)
        values, ms = session.infer(feeds)
        result = session.result(values, job.score_threshold)
        result["latency_ms"] = round(ms, 3)
        job.result, job.infer_ms = result, ms
    except Exception as exc:
        job.error = classify(exc)
    finally:
        job.done.set()


def load_sessions(root: Bundle, manifest: dict[str, Any], count: int, threads: int | None) -> list[Session]:
    """``count`` independent interpreters on the same model file (the kernel shares its pages).

    Raises ModelLoadError like a single Session."""
    if count < 1:
        raise ModelLoadError("need at least one worker")
    return [Session(root, manifest, threads) for _ in range(count)]


class Pool:
    """``len(sessions)`` daemon threads, each owning one Session, taking jobs from one queue."""

    def __init__(self, sessions: list[Session], on_done: Callable[[Job], None] | None = None) -> None:
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._on_done = on_done
        self._threads = [
            threading.Thread(target=self._work, args=(s,), name=f"worker-{i}", daemon=True)
            for i, s in enumerate(sessions)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def close(self, timeout_s: float) -> None:
        """Let queued jobs finish, then stop the threads (waiting at most ``timeout_s`` in all)."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self, session: Session) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancelled:
                continue
            run_job(session, job)
            if self._on_done is not None:
                self._on_done(job)
