"""Bounding the memory images take while they are decoded in ``--serve``/``--batch``, and giving it
back to the system afterwards.

Request bodies are bounded by ``--max-inflight-mb``, but a body is compressed: a flat 40 MP PNG is
40 KB on the wire and 160 MB decoded (Pillow stores RGB as 4 bytes a pixel), and converting it can
briefly take more. So each decode takes its estimated peak (``preprocess.decode_cost``, from the
image header, before any pixel is decoded) out of a budget shared by all workers
(``--max-decode-mb``); a decode that would exceed it waits until others have finished, and one
larger than the whole budget runs alone.

Freed is not returned: glibc raises its mmap threshold each time a large block is freed (up to
32 MB), after which image-sized blocks come from the heap and thread arenas and stay there when freed
(measured: a server that decoded 8 40 MP RGB PNGs held 373 MB idle, against 36 MB before).
``tune_malloc`` fixes the threshold, so every block of 1 MB or more is its own mapping and unmapped
on free, and the budget trims the heap when the last decode of a batch ends. Standard library only
(ctypes), and a no-op where the C library is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable, Iterator

MMAP_THRESHOLD = 1 << 20
# Trimming walks every arena (a few ms with large ones): only after a decode that was this big.
TRIM_AFTER_BYTES = 16 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


class Cancelled(Exception):
    """The job was given up (its request timed out) while it waited for the budget."""


class WouldWait(Exception):
    """A decode that was not to wait (``hold(..., wait=False)``) does not fit in the budget now."""


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


_LIBC = _libc()


def tune_malloc() -> None:
    """Serve large allocations from their own mappings, so that freeing them returns the memory."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim() -> None:
    """Return the free memory at the top of the heap and inside the arenas to the system."""
    malloc_trim = getattr(_LIBC, "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


class DecodeBudget:
    """At most ``megabytes`` of decodes at once, across threads (see the module docstring)."""

    def __init__(self, megabytes: float) -> None:
        self.limit = max(1, int(megabytes * 1024 * 1024))
        self.used = 0
        self.waiting = 0  # decodes queued for the budget (tests and metrics read it)
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(
        self, cost: int, cancelled: Callable[[], bool] = lambda: False, wait: bool = True
    ) -> Iterator[None]:
        """Wait until ``cost`` bytes fit, hold them for the ``with`` block. Cancelled when
        ``cancelled()`` turned true while waiting; WouldWait at once without ``wait``."""
        cost = min(cost, self.limit)  # larger than the whole budget: it waits for all of it
        with self._cond:
            if not wait and self.used + cost > self.limit:
                raise WouldWait
            self.waiting += 1
            try:
                while self.used + cost > self.limit:
                    self._cond.wait()
            finally:
                self.waiting -= 1
            self.used += cost
        try:
            if cancelled():
                raise Cancelled
            yield
        finally:
            with self._cond:
                self.used -= cost
                idle = self.used == 0 and self.waiting == 0
                self._cond.notify_all()
            if idle and cost >= TRIM_AFTER_BYTES:
                trim()
