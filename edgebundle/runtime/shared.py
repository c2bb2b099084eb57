"""What the processes of ``--serve --workers N`` share: one anonymous shared mapping made before they
are forked, so that ``/metrics``, the decode budget, the bodies in flight and the connection cap are
the whole server's, whichever process answers.

Layout: a header (the server is ready) and one slot per worker process, each an array of float64
(exact for counts up to 2**53): its pid, gauges, request counters by route and status, two latency
histograms. A process writes only its own slot (its
threads behind a lock, metrics.py), and readers sum the slots: no cross-process lock on the request
path. The decode budget and the body bytes are each a field of every slot too: taking some checks
the sum of the slots under a POSIX record lock on the mapping's file (``fcntl.lockf``, a few
microseconds; per process, so a threading lock serialises the threads of one process first), giving
it back needs no lock (a process lowers its own field; a reader in between errs on the safe side).
One process (``--workers 1``) uses the same layout in its own memory, so the metrics code is the
same. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from .memory import TRIM_AFTER_BYTES, Cancelled, WouldWait, trim

# Latency histogram buckets, seconds (Prometheus ``le`` bounds).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The statuses the server answers with (http1.REASONS and connection.py); any other is counted as 500.
STATUSES = (200, 400, 404, 405, 408, 411, 413, 431, 500, 501, 503, 504, 505)
STATUS_INDEX = {status: i for i, status in enumerate(STATUSES)}
HIST = len(BUCKETS) + 2  # bucket counts, +Inf, sum

# The header's fields (indexes of float64s)
H_READY, HEADER = 0, 8
# A slot's fields
PID, IN_FLIGHT, CONNECTIONS, BODY_BYTES, STARTED, ACCEPTING, DECODE_USED, DECODE_WAITING, BUSY = range(9)
REQUESTS = 12
WAIT_POLL_S = 0.002  # a decode waiting for the budget held by another process looks again after this


class Shared:
    """The header and ``slots`` slots; ``processes`` > 1 maps them shared (before the forks)."""

    def __init__(self, paths: Sequence[str], slots: int, processes: bool) -> None:
        self.paths = list(paths)
        self.path_index = {path: i for i, path in enumerate(self.paths)}
        self.slots = slots
        self.inference = REQUESTS + len(self.paths) * len(STATUSES)
        self.request_duration = self.inference + HIST
        self.slot_size = self.request_duration + HIST
        size = 8 * (HEADER + slots * self.slot_size)
        self._fd: int | None = None
        if processes:
            self._fd = _anonymous_file(size)
            self._map: mmap.mmap | bytearray = mmap.mmap(self._fd, size)  # MAP_SHARED
        else:
            self._map = bytearray(size)
        self.words = memoryview(self._map).cast("d")
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.words[H_READY] == 1.0

    @ready.setter
    def ready(self, value: bool) -> None:
        self.words[H_READY] = float(value)

    def base(self, slot: int) -> int:
        return HEADER + slot * self.slot_size

    def total(self, field: int) -> float:
        """A field summed over the slots."""
        return sum(self.words[self.base(s) + field] for s in range(self.slots))

    def take(self, slot: int, field: int, n: float, limit: float) -> bool:
        """Add ``n`` to ``slot``'s ``field`` if the field's total over the slots stays within
        ``limit`` (give gives it back)."""
        # Exclusive across this process's threads and, through the file lock, across the processes;
        # written out, as a generator's context manager would cost more than the locking (this runs
        # twice a served request).
        with self._lock:
            fd = self._fd
            if fd is not None:
                fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                if self.total(field) + n > limit:
                    return False
                self.words[self.base(slot) + field] += n
                return True
            finally:
                if fd is not None:
                    fcntl.lockf(fd, fcntl.LOCK_UN)

    def give(self, slot: int, field: int, n: float) -> None:
        """Subtract ``n`` from ``slot``'s ``field``: no other process writes it, so the threads' lock
        is enough."""
        with self._lock:
            self.words[self.base(slot) + field] -= n

    def pids(self) -> list[int]:
        return [int(p) for s in range(self.slots) if (p := self.words[self.base(s) + PID])]

    def reset(self, slot: int, pid: int) -> None:
        """A new process in ``slot``: its gauges start at zero, its counters go on (they are the
        server's, not the process's)."""
        b = self.base(slot)
        for field in (IN_FLIGHT, CONNECTIONS, BODY_BYTES, ACCEPTING, DECODE_USED, DECODE_WAITING, BUSY):
            self.words[b + field] = 0.0
        self.words[b + PID] = float(pid)
        self.words[b + STARTED] = time.time()

    def close(self) -> None:
        self.words.release()
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _anonymous_file(size: int) -> int:
    """A file in memory only (memfd; an unlinked temporary file where there is none)."""
    memfd_create = getattr(os, "memfd_create", None)
    fd: int | None = None
    if memfd_create is not None:
        with contextlib.suppress(OSError):
            fd = memfd_create("ebrt-shared", getattr(os, "MFD_CLOEXEC", 1))
    if fd is None:
        fd, path = tempfile.mkstemp(prefix="ebrt-shared-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd


class SharedDecodeBudget:
    """``memory.DecodeBudget`` for all the processes together: at most ``megabytes`` of decodes at
    once in the whole server. A decode that does not fit waits: woken at once by a decode of its own
    process that ends, else it looks again every WAIT_POLL_S (room made by another process)."""

    def __init__(self, megabytes: float, shared: Shared, slot: int) -> None:
        self.limit = max(1, int(megabytes * 1024 * 1024))
        self._shared = shared
        self._slot = slot
        self._used = shared.base(slot) + DECODE_USED
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        return int(self._shared.total(DECODE_USED))

    @property
    def waiting(self) -> int:
        return int(self._shared.total(DECODE_WAITING))

    @contextlib.contextmanager
    def hold(
        self, cost: int, cancelled: Callable[[], bool] = lambda: False, wait: bool = True
    ) -> Iterator[None]:
        cost = min(cost, self.limit)  # larger than the whole budget: it waits for all of it
        shared, slot = self._shared, self._slot
        if not shared.take(slot, DECODE_USED, cost, self.limit):
            if not wait:
                raise WouldWait
            with self._cond:
                shared.give(slot, DECODE_WAITING, -1)
                try:
                    while not shared.take(slot, DECODE_USED, cost, self.limit):
                        self._cond.wait(WAIT_POLL_S)
                finally:
                    shared.give(slot, DECODE_WAITING, 1)
        try:
            if cancelled():
                raise Cancelled
            yield
        finally:
            shared.give(slot, DECODE_USED, cost)
            with self._cond:
                idle = shared.words[self._used] == 0  # this process's decodes: it trims its own heap
                self._cond.notify_all()
            if idle and cost >= TRIM_AFTER_BYTES:
                trim()
