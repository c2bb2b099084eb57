"""Running a device step: like runner.run (resolve the tool with an install hint, echo ``+ argv``),
but streaming stdout line by line (progress while runs go, over SSH too), feeding a file on stdin,
with a timeout, and ending the step politely when we are interrupted.

Why not runner.run: it returns the output only at the end and has no stdin or interruption handling;
a device step needs all three.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import DeviceError
from ..runner import Echo, which

LineHandler = Callable[[str], None]

# How long a step gets to end on SIGTERM (the measurer then ends its own run) before SIGKILL.
TERM_GRACE_S = 5.0


@dataclass(frozen=True, kw_only=True)
class StepResult:
    returncode: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def stream(
    argv: Sequence[str],
    *,
    shown: str,
    echo: Echo | None,
    stdin: Path | None = None,
    on_line: LineHandler | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    detach: bool = False,
) -> StepResult:
    """Run ``argv`` to completion; call ``on_line`` with each stdout line as it arrives.

    ``shown`` is what is echoed instead of the full argv (which may hold a whole script). ``detach``
    puts the step in a session of its own, so that a Ctrl-C at the terminal does not reach it (for
    the cleanup, which must run to its end).
    """
    argv = [which(argv[0]), *argv[1:]]
    if echo:
        echo(f"+ {shown}")
    with ExitStack() as stack:
        err = stack.enter_context(tempfile.TemporaryFile())
        inp: IO[bytes] | int = (
            stack.enter_context(open(stdin, "rb")) if stdin is not None else subprocess.DEVNULL
        )
        proc = subprocess.Popen(
            argv,
            stdin=inp,
            stdout=subprocess.PIPE,
            stderr=err,
            env=dict(env) if env is not None else None,
            start_new_session=detach,
        )
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _end(proc)

        timer = threading.Timer(timeout, expire) if timeout is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(line)
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        except BaseException:
            _end(proc)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if expired.is_set():
        raise DeviceError(f"{shown}: no answer within {timeout:.0f} s; the device or the binary hangs")
    return StepResult(returncode=code, stdout="\n".join(lines), stderr=stderr)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a grace period, then SIGKILL: the step (measurer, ssh) gets to end what it started."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


def tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of some output, on one line."""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)
