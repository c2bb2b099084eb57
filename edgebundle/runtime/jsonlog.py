"""Logs as one JSON object per line on stderr (``--serve``), Python's own warnings and asyncio's
logger included."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any


class Log:
    """One JSON object per line on stderr, whole lines only (a lock across threads, one write per
    line across processes). With ``pid`` set (the processes of ``--serve --workers N``), every line
    says which process wrote it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pid: int | None = None

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        record = {"ts": stamp, "level": level, "event": event, **fields}
        if self.pid is not None:
            record["pid"] = self.pid
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not take a request down with it


def log_everything_as_json(log: Log) -> None:
    """Python's own complaints (warnings, asyncio's logger) as JSON lines too, not free text."""
    import logging
    import warnings

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log(record.levelname.lower(), "python_log", logger=record.name, message=record.getMessage())

    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(Handler())
    asyncio_logger.propagate = False

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        where = f"{filename}:{lineno}"
        log("warning", "python_warning", category=category.__name__, message=str(message), at=where)

    warnings.showwarning = show
