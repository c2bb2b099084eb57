"""The one module for subprocesses (edgebundle/proc.py): lines arrive while the command runs, stdin
is fed, failures name the command, the exit code, the output's tail and the log; timeouts and
interrupts end the command."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from edgebundle.errors import BuildError, DeviceError, ToolMissingError
from edgebundle.proc import TIMEOUT_S, counted_progress, pipe, run, stream, tail

PY = sys.executable


def test_lines_reach_on_line_while_the_command_still_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = (
        "import os, sys, time\n"
        "print('first', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
        "print('second')\n"
    )
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "first":
            # The command waits for this file: if lines were only handed over at the end, the run
            # would never finish.
            gate.touch()

    done = stream([PY, "-c", script], echo=None, on_line=on_line, timeout=30)
    assert seen == ["first", "second"]
    assert done.returncode == 0
    assert done.lines() == ["first", "second"]


def test_stdin_is_fed_from_a_file_and_stderr_is_kept_apart(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("hello\nworld\n")
    script = "import sys; print(sys.stdin.read().upper(), end=''); print('oops', file=sys.stderr)"
    done = stream([PY, "-c", script], echo=None, stdin=data)
    assert done.lines() == ["HELLO", "WORLD"]
    assert done.stderr.strip() == "oops"


def test_run_returns_stdout_and_appends_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "build.log"
    echoed: list[str] = []
    out = run([PY, "-c", "print('a'); print('b')"], log=log, echo=echoed.append)
    assert out == "a\nb\n"
    assert echoed
    assert echoed[0].startswith("+ ")
    assert PY in echoed[0]
    run([PY, "-c", "print('c')"], log=log, echo=None)
    text = log.read_text()
    assert "a\nb\n" in text
    assert "c\n" in text
    assert text.count("[exit 0]") == 2


def test_a_failure_names_the_step_the_exit_code_the_tail_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    script = "import sys\nfor i in range(40): print('line', i)\nsys.exit(3)"
    with pytest.raises(BuildError) as failure:
        run([PY, "-c", script], log=log, echo=None, what="compiling", tail_lines=2)
    message = str(failure.value)
    assert message.startswith("compiling failed with exit code 3")
    assert f"(full log: {log})" in message
    assert message.endswith("line 38 | line 39")
    assert "line 0\n" in log.read_text()


def test_stderr_is_preferred_for_the_tail_and_signals_are_named() -> None:
    script = (
        "import os, sys; print('out'); print('the reason', file=sys.stderr); sys.stderr.flush()\n"
        "os.kill(os.getpid(), 9)"
    )
    with pytest.raises(DeviceError, match=r"killed by signal 9: the reason$"):
        run([PY, "-c", script], echo=None, error=DeviceError)


def test_a_missing_tool_gets_an_install_hint() -> None:
    with pytest.raises(ToolMissingError, match=r"^patchelf-nonexistent: not found; install"):
        run(["patchelf-nonexistent"], echo=None)


def test_a_timeout_ends_the_command_and_raises_the_given_error(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(DeviceError, match="no answer within 1 s"):
        stream([PY, "-c", script], echo=None, timeout=1, error=DeviceError)
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)


def test_a_timed_out_build_step_names_what_it_was_and_the_command() -> None:
    with pytest.raises(
        BuildError, match=r"^pip install into the build venv \(.*sleep.*\): no answer within 1 s"
    ):
        run(
            [PY, "-c", "import time; time.sleep(60)"],
            echo=None,
            what="pip install into the build venv",
            timeout=1,
        )


def test_every_kind_of_command_has_a_timeout() -> None:
    assert all(0 < seconds <= 7200 for seconds in TIMEOUT_S.values())
    assert TIMEOUT_S["quick"] < TIMEOUT_S["pip install"] < TIMEOUT_S["backend build"]


def test_pipe_feeds_bytes_and_returns_bytes() -> None:
    script = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])"
    done = pipe([PY, "-c", script], bytes(range(256)), what="reversing")
    assert (done.returncode, done.stdout) == (0, bytes(range(256))[::-1])


def test_pipe_ends_a_filter_that_hangs() -> None:
    started = time.monotonic()
    with pytest.raises(DeviceError, match=r"^unpacking \(.*\): no answer within 1 s"):
        pipe([PY, "-c", "import time; time.sleep(60)"], b"", what="unpacking", timeout=1, error=DeviceError)
    assert time.monotonic() - started < 30


def test_an_interrupt_ends_the_command_before_it_propagates(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = (
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "print('up', flush=True); time.sleep(60)"
    )

    def on_line(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stream([PY, "-c", script], echo=None, on_line=on_line)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)


def test_tail_joins_the_last_non_empty_lines() -> None:
    assert tail("a\n\nb\n  c  \n\n", 2) == "b | c"
    assert tail("") == ""


def test_a_detached_command_does_not_get_our_sigint(tmp_path: Path) -> None:
    # A detached command runs in a session of its own: a Ctrl-C at the terminal (SIGINT to our
    # process group) must not reach a cleanup step.
    script = "import os; print(os.getsid(0) == os.getpid())"
    assert stream([PY, "-c", script], echo=None, detach=True).lines() == ["True"]
    assert stream([PY, "-c", script], echo=None).lines() == ["False"]


def test_counted_progress_echoes_each_tenth_of_the_way_once() -> None:
    shown: list[str] = []
    on_line = counted_progress("building numpy", shown.append)
    for line in ["Preparing metadata", *(f"  [{n}/250] Compiling C object x{n}.o" for n in range(1, 251))]:
        on_line(line)
    assert shown[0] == "building numpy: 25/250 steps"
    assert shown[-1] == "building numpy: 250/250 steps"
    assert len(shown) == 10
