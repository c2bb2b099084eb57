"""What the builder tells its user while it works, on stderr (stdout is for results).

Three levels: ``quiet`` (errors and the final result only), ``normal`` (one line per step with its
time) and ``verbose`` (also every command as it runs, ``+ argv``, and the details of each step).
On a terminal a step that runs for more than a moment shows a live line (its title, the latest
progress, the time so far) that its final line replaces; in a log (not a TTY) progress comes as plain
lines, as pip and cibuildwheel print them.

A ``Reporter`` is also an ``Echo`` (a callable taking a line), so the core, which only knows that
type, needs no change to be quiet or verbose: lines starting with ``+ `` are commands.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, TextIO

Level = Literal["quiet", "normal", "verbose"]

# How often a live line is redrawn on a terminal; only the elapsed time changes in between.
REDRAW_S = 0.25
# A step that ends sooner shows no live line at all (no flicker for cached steps).
LIVE_AFTER_S = 0.5
# In a log (no terminal), a step's progress comes as a plain line at most this often: a heartbeat for
# a long step, not a line per item.
PLAIN_EVERY_S = 5.0


class Reporter:
    def __init__(
        self, level: Level = "normal", stream: TextIO | None = None, live: bool | None = None
    ) -> None:
        self.level = level
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._lock = threading.Lock()
        self._status: _Live | None = None

    # --- an Echo ---------------------------------------------------------------------------------

    def __call__(self, line: str) -> None:
        if line.startswith("+ "):
            self.command(line[2:])
        else:
            self.detail(line)

    # --- what the core says ----------------------------------------------------------------------

    def command(self, shown: str) -> None:
        """A command about to run: verbose only."""
        if self.level == "verbose":
            self._print(f"+ {shown}")

    def detail(self, line: str) -> None:
        """Something a step found or did: shown in normal mode outside a step; inside one in full only
        when verbose (the step's own line sums it up), else as progress (the live line on a terminal,
        a heartbeat in a log)."""
        if self.level == "verbose" or (self.level == "normal" and self._status is None):
            self._print(line)
        else:
            self.progress(line)

    def progress(self, line: str) -> None:
        """How far a long step is (N/M, a phase): the live line on a terminal, a plain line in a log."""
        if self.level == "quiet":
            return
        status = self._status
        if status is not None and self.live:
            status.progress = line
        elif status is None or self.level == "verbose":
            self._print(line)
        elif time.monotonic() - status.last_plain >= PLAIN_EVERY_S:
            status.last_plain = time.monotonic()
            self._print(f"{status.title}: {line}")

    def info(self, line: str) -> None:
        """A line the user should see in normal mode, whatever step is running."""
        if self.level != "quiet":
            self._print(line)

    def warn(self, line: str) -> None:
        """Something that did not stop the work but may need the user: shown unless quiet."""
        if self.level != "quiet":
            self._print(f"warning: {line}")

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[_Step]:
        """One line for the step when it ends, ``title: summary (N.N s)``; a live line meanwhile."""
        started = time.monotonic()
        step = _Step()
        status = _Live(title, started)
        previous, self._status = self._status, status
        ticker = None
        if self.live and self.level != "quiet":
            ticker = threading.Thread(target=self._tick, args=(status,), daemon=True)
            ticker.start()
        try:
            yield step
        finally:
            status.done.set()
            if ticker is not None:
                ticker.join()
            self._status = previous
        if self.level != "quiet":
            self._print(step.line(title, started))

    # --- drawing ---------------------------------------------------------------------------------

    def _print(self, line: str) -> None:
        with self._lock:
            if self._status is not None and self._status.drawn:
                self.stream.write("\r\x1b[K")
                self._status.drawn = False
            self.stream.write(line + "\n")
            self.stream.flush()

    def _tick(self, status: _Live) -> None:
        if status.done.wait(LIVE_AFTER_S):
            return
        while True:
            with self._lock:
                elapsed = time.monotonic() - status.started
                extra = f" {status.progress}" if status.progress else ""
                width = 119
                text = f"{status.title} ...{extra} {elapsed:.0f} s"
                if len(text) > width:
                    text = text[: width - 3] + "..."
                self.stream.write("\r\x1b[K" + text)
                self.stream.flush()
                status.drawn = True
            if status.done.wait(REDRAW_S):
                break
        with self._lock:
            if status.drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                status.drawn = False


class _Step:
    """What the caller fills in: the summary of the step's final line."""

    summary: str = ""

    def line(self, title: str, started: float) -> str:
        summary = f": {self.summary}" if self.summary else ""
        return f"{title}{summary} ({time.monotonic() - started:.1f} s)"


class _Live:
    def __init__(self, title: str, started: float) -> None:
        self.title = title
        self.started = started
        self.progress = ""
        self.last_plain = started
        self.drawn = False
        self.done = threading.Event()


def progress_of(echo: Callable[[str], None]) -> Callable[[str], None]:
    """The progress channel of an Echo: a Reporter's ``progress``, else the Echo itself."""
    return echo.progress if isinstance(echo, Reporter) else echo


def warn(echo: Callable[[str], None], line: str) -> None:
    """``Reporter.warn`` for any Echo."""
    if isinstance(echo, Reporter):
        echo.warn(line)
    else:
        echo(f"warning: {line}")


@contextlib.contextmanager
def step(echo: Callable[[str], None], title: str) -> Iterator[_Step]:
    """``Reporter.step`` for any Echo: a plain Echo gets the step's final line only."""
    if isinstance(echo, Reporter):
        with echo.step(title) as s:
            yield s
        return
    started = time.monotonic()
    s = _Step()
    yield s
    echo(s.line(title, started))
