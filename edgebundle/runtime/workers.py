"""Worker threads for ``--serve`` and ``--batch``: one Session (one interpreter) per worker, jobs in a
queue, each job's result or error handed back through an event.

Threads, not processes: the interpreter's ``invoke`` releases the GIL, so N interpreters run N
inferences at once, and everything else (one queue, one set of metrics) stays in one process. The
Python around an inference (decode, resize, JSON) still holds the GIL, which is what caps a tiny model
like the digits example; see README "Serving" for the measured numbers.

Imported only in those modes, so plain ``APP IMAGE`` and ``--self-test`` never pay for it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .memory import Cancelled, DecodeBudget, tune_malloc
from .model import ModelLoadError
from .payload import Bundle
from .preprocess import ImageError, ImageTooLarge
from .session import Session

if TYPE_CHECKING:
    from .manifest import Manifest

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


def classify(exc: Exception) -> RequestError:
    """The service's answer to an exception raised while preparing or running one inference."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, ImageTooLarge):
        return RequestError(413, "image_too_large", str(exc))
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


def run_job(session: Session, job: Job, budget: DecodeBudget | None = None) -> None:
    """Prepare, infer and summarize one job in the calling thread; the outcome lands on the job.
    Its decode holds its estimated memory (decode_cost) of ``budget`` while it runs."""

    @contextlib.contextmanager
    def admit(cost: int) -> Iterator[None]:
        assert budget is not None
        with budget.hold(cost, lambda: job.cancelled):
            if job.delay_s:  # the test hook's delay holds the budget, so tests can fill it
                time.sleep(job.delay_s)
                job.delay_s = 0.0
            yield

    try:
        data = job.data
        if isinstance(data, str):
            feeds = session.feeds_for_file(data, admit if budget else None)
        else:
            feeds = session.feeds_for_image(data, admit if budget else None)
        if job.delay_s:  # nothing was decoded under the budget (raw tensors), or there is none
            time.sleep(job.delay_s)
        values, ms = session.infer(feeds)
        result = session.result(values, job.score_threshold)
        result["latency_ms"] = round(ms, 3)
        job.result, job.infer_ms = result, ms
    except Cancelled:
        job.error = RequestError(504, "timeout", "given up while waiting to decode")
    except Exception as exc:
        job.error = classify(exc)
    finally:
        job.done.set()


def load_sessions(
    root: Bundle, manifest: Manifest, count: int, threads: int | None, max_pixels: int | None
) -> list[Session]:
    """``count`` independent interpreters on the same model file (the kernel shares its pages).

    Raises ModelLoadError like a single Session."""
    if count < 1:
        raise ModelLoadError("need at least one worker")
    return [Session(root, manifest, threads, max_pixels) for _ in range(count)]


class Pool:
    """``len(sessions)`` daemon threads, each owning one Session, taking jobs from one queue; their
    decodes share ``budget`` (memory.py)."""

    def __init__(
        self,
        sessions: list[Session],
        on_done: Callable[[Job], None] | None = None,
        budget: DecodeBudget | None = None,
    ) -> None:
        if budget is not None:
            tune_malloc()
        self.budget = budget
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
            run_job(session, job, self.budget)
            if self._on_done is not None:
                self._on_done(job)
