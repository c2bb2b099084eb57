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
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .memory import Cancelled, DecodeBudget, WouldWait, tune_malloc
from .model import ModelLoadError
from .payload import Bundle
from .preprocess import ImageError, ImageTooLarge
from .session import Session, is_detection

if TYPE_CHECKING:
    from .manifest import Manifest
    from .shared import SharedDecodeBudget

    Budget = DecodeBudget | SharedDecodeBudget

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
        "run_s",
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
        self.run_s = 0.0  # the whole job's time (decode, preprocess, invoke, summary)
        self.waiter: Any = None  # for the serve mode's event loop: the future its request awaits

    def fail(self, error: RequestError) -> None:
        self.error = error
        self.done.set()


def run_job(session: Session, job: Job, budget: Budget | None = None, wait: bool = True) -> None:
    """Prepare, infer and summarize one job in the calling thread; the outcome lands on the job.
    Its decode holds its estimated memory (decode_cost) of ``budget`` while it runs. Without
    ``wait``, WouldWait (and nothing done) when the budget has no room for it now."""

    @contextlib.contextmanager
    def admit(cost: int) -> Iterator[None]:
        assert budget is not None
        with budget.hold(cost, lambda: job.cancelled, wait):
            if job.delay_s:  # the test hook's delay holds the budget, so tests can fill it
                time.sleep(job.delay_s)
                job.delay_s = 0.0
            yield

    started, delay = time.perf_counter(), job.delay_s
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
    except WouldWait:
        raise
    except Exception as exc:
        job.error = classify(exc)
    job.run_s = time.perf_counter() - started - delay
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
        budget: Budget | None = None,
        on_busy: Callable[[int], None] | None = None,
    ) -> None:
        if budget is not None:
            tune_malloc()
        self.budget = budget
        self._sessions = sessions
        self._submitted = 0  # jobs given to the threads (by the submitting thread)...
        self._finished = 0  # ... and done (by the threads): all idle when equal
        self._lock = threading.Lock()
        self._on_busy = on_busy  # told +1 when a job is queued, -1 when it is done or skipped
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._on_done = on_done
        self._threads = [
            threading.Thread(target=self._work, args=(s,), name=f"worker-{i}", daemon=True)
            for i, s in enumerate(sessions)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        self._submitted += 1
        if self._on_busy is not None:
            self._on_busy(1)
        self._queue.put(job)

    def run_here(self, job: Job) -> bool:
        """Run ``job`` in the calling thread, with the first worker's interpreter, when every worker
        is idle and its decode need not wait for the budget; False (nothing done) otherwise. Only
        the thread that submits may call it (so that no job is submitted meanwhile)."""
        if self._submitted != self._finished:
            return False
        try:
            run_job(self._sessions[0], job, self.budget, wait=False)
        except WouldWait:
            job.done.clear()
            return False
        return True

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
            try:
                if job.cancelled:
                    continue
                run_job(session, job, self.budget)
                if self._on_done is not None:
                    self._on_done(job)
            finally:
                with self._lock:
                    self._finished += 1
                if self._on_busy is not None:
                    self._on_busy(-1)


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
