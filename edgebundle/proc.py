"""Every external command of the builder goes through this module (processes: hence its name; a
"runner" is the cached frozen program of backends/runners.py): it resolves the executable first (with
an install hint when missing), echoes ``+ argv`` (like ``set -x``), streams stdout line by line to
whoever wants progress, feeds a file on stdin, enforces a timeout on every call (TIMEOUT_S: a default
per kind of command), and ends the command politely (SIGTERM, a grace period, SIGKILL) when it times
out or we are interrupted.

``stream`` returns what the command did; ``run`` is ``stream`` for build steps: it keeps the full
output in a log file and on failure raises with the command, the exit code and the tail of the output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

from .errors import BuildError, ToolMissingError

INSTALL_HINTS: dict[str, str] = {
    "python3.11": "install Python 3.11 (Debian 12: apt-get install python3.11 python3.11-venv)",
    "python3.10": "install Python 3.10 (e.g. with pyenv or the deadsnakes packages)",
    "python3.12": "install Python 3.12 (e.g. with pyenv or apt-get install python3.12-venv)",
    "strip": "apt-get install binutils",
    "objdump": "apt-get install binutils",
    "patchelf": "apt-get install patchelf",
    "gcc": "apt-get install gcc",
    "musl-gcc": "apt-get install musl-tools",
    "zstd": "apt-get install zstd",
}

# A stderr echo of each command, so that logs show what ran (like ``set -x``).
Echo = Callable[[str], None]
LineHandler = Callable[[str], None]

Kind = Literal[
    "quick",
    "compile",
    "pip install",
    "source build",
    "build root",
    "backend build",
    "model probe",
    "self-test",
    "device step",
]
# How long each kind of command may run before it is ended, in seconds. Generous on purpose: a timeout
# is there so that a hung pip, compiler, QEMU or binary ends with a message naming it, not to police a
# slow machine (first builds under QEMU on 2 shared cores are the measure).
TIMEOUT_S: Final[dict[Kind, float]] = {
    "quick": 120.0,  # a version probe, zstd, objdump, mount: seconds at most
    "compile": 600.0,  # the C launcher: about a second
    "pip install": 3600.0,  # a build environment's pinned wheels (minutes under QEMU)
    "source build": 3600.0,  # NumPy from its sdist without BLAS: ~10 min on 2 cores
    "build root": 3600.0,  # mmdebstrap of a foreign Debian root under QEMU: ~10 min
    "backend build": 7200.0,  # a runner: PyInstaller ~30 s; Nuitka's first build compiles for many minutes
    "model probe": 600.0,  # loading the model with the target's interpreter, under QEMU too
    "self-test": 300.0,  # a fresh binary's --self-test: a MobileNet-sized model under QEMU takes ~20 s
    "device step": 600.0,  # one step of a device test (measurement.py gives runs more)
}
# For a call that names no kind: a command of the builder that is not a build step.
DEFAULT_TIMEOUT_S: Final = TIMEOUT_S["device step"]

# How long a command gets to end on SIGTERM (a measurer ends its own run, a compiler its children)
# before SIGKILL.
TERM_GRACE_S = 5.0


def stderr_echo(line: str) -> None:
    """The builder's default ``Echo``: a line on stderr, flushed (the user sees progress as it comes)."""
    print(line, file=sys.stderr, flush=True)


# Where commands echo when their caller passes no echo of its own: the CLI points it at its reporter
# once (set_default_echo), so that -q/-v hold for the commands that toolchains run too.
_sink: list[Echo] = [stderr_echo]


def set_default_echo(echo: Echo) -> None:
    _sink[0] = echo


def default_echo(line: str) -> None:
    """Where a command echoes when its caller gives no echo: the reporter the CLI set, else stderr."""
    _sink[0](line)


def which(tool: str) -> str:
    """The absolute path of ``tool``, or a ToolMissingError with a hint on how to install it."""
    found = tool if os.path.sep in tool and os.access(tool, os.X_OK) else shutil.which(tool)
    if not found:
        hint = INSTALL_HINTS.get(os.path.basename(tool), f"install {tool} and put it on PATH")
        raise ToolMissingError(f"{tool}: not found; {hint}")
    return found


@dataclass(frozen=True, kw_only=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def stream(
    argv: Sequence[str],
    *,
    shown: str | None = None,
    echo: Echo | None = default_echo,
    stdin: Path | None = None,
    on_line: LineHandler | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    what: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detach: bool = False,
    error: type[Exception] = BuildError,
) -> Completed:
    """Run ``argv`` to completion, whatever its exit code; call ``on_line`` with each stdout line as
    it arrives.

    ``shown`` is what is echoed instead of the full argv (which may hold a whole script). ``detach``
    puts the command in a session of its own, so that a Ctrl-C at the terminal does not reach it (for
    a cleanup, which must run to its end). Past ``timeout`` seconds the command is ended and ``error``
    raised, naming ``what`` (or the command) and the command.
    """
    argv = [which(argv[0]), *argv[1:]]
    shown = shown if shown is not None else shlex.join(argv)
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
            cwd=cwd,
            start_new_session=detach,
        )
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _end(proc)

        timer = threading.Timer(timeout, expire)
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
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if expired.is_set():
        raise error(_timed_out(what, shown, timeout))
    stdout = "\n".join(lines) + ("\n" if lines else "")
    return Completed(returncode=code, stdout=stdout, stderr=stderr)


def _timed_out(what: str | None, shown: str, timeout: float) -> str:
    label = f"{what} ({shown})" if what else shown
    return f"{label}: no answer within {timeout:.0f} s, ended; it hangs, or needs more time here"


@dataclass(frozen=True, kw_only=True)
class Piped:
    returncode: int
    stdout: bytes
    stderr: bytes


def pipe(
    argv: Sequence[str],
    data: bytes,
    *,
    what: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    error: type[Exception] = BuildError,
) -> Piped:
    """Feed ``data`` to a filter whose output is bytes, not lines (``zstd -d``), and return what it did,
    whatever its exit code; quiet (a read-only command such as ``inspect`` echoes nothing)."""
    argv = [which(argv[0]), *argv[1:]]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        _end(proc)
        proc.communicate()
        raise error(_timed_out(what, shlex.join(argv), timeout)) from None
    except BaseException:
        _end(proc)
        raise
    return Piped(returncode=proc.returncode, stdout=out, stderr=err)


def run(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    echo: Echo | None = default_echo,
    on_line: LineHandler | None = None,
    what: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    error: type[Exception] = BuildError,
    tail_lines: int = 15,
) -> str:
    """Run a command to completion and return its stdout (stderr goes to the log).

    On a non-zero exit raise ``error`` naming ``what`` (or the command), the exit code, the last
    lines of output and where the full log is; past ``timeout`` seconds, the same without the exit.
    """
    argv = [which(argv[0]), *argv[1:]]
    done = stream(argv, echo=echo, on_line=on_line, env=env, cwd=cwd, what=what, timeout=timeout, error=error)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"+ {shlex.join(argv)}\n{done.stdout}{done.stderr}[exit {done.returncode}]\n")
    if done.returncode != 0:
        code = done.returncode
        reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        where = f" (full log: {log})" if log else ""
        label = what or shlex.join(argv[:3])
        details = tail(done.stderr.strip() or done.stdout, tail_lines)
        raise error(f"{label} failed with {reason}{where}: {details}")
    return done.stdout


_COUNTED = re.compile(r"\[(\d+)/(\d+)\]")


def counted_progress(label: str, echo: Echo | None, *, steps: int = 10) -> LineHandler:
    """An ``on_line`` handler for tools that number their steps ``[N/M]`` (ninja under meson, as in
    a NumPy source build): ``label: N/M steps`` each time another 1/``steps`` of the way is done."""
    shown = 0

    def on_line(line: str) -> None:
        nonlocal shown
        found = _COUNTED.search(line)
        if found is None or echo is None:
            return
        done, total = int(found[1]), int(found[2])
        if total and done * steps // total > shown:
            shown = done * steps // total
            echo(f"{label}: {done}/{total} steps")

    return on_line


@contextlib.contextmanager
def background(argv: Sequence[str], *, echo: Echo | None = default_echo) -> Iterator[subprocess.Popen[bytes]]:
    """A command that runs while the caller works (an SSH tunnel), ended (SIGTERM, grace, SIGKILL)
    when the block ends, whatever happens in it. Its stderr is kept for the caller to explain a
    failure (``proc.stderr``); stdin and stdout are /dev/null."""
    if echo:
        echo(f"+ {shlex.join(argv)} &")
    proc = subprocess.Popen(
        [which(argv[0]), *argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        _end(proc)
        if proc.stderr:
            proc.stderr.close()


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a grace period, then SIGKILL: the command gets to end what it started."""
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
