"""How the binary's entry leaves (edgebundle/runtime/app.py: leave): its output flushed, its exit code
kept, Python's finalization skipped, except while another thread would still be waited for."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT


def run(code: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    script = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def test_output_is_flushed_and_the_code_kept_without_finalizing() -> None:
    proc = run(
        """
        import atexit
        from edgebundle.runtime.app import leave
        atexit.register(lambda: print("finalized"))
        print('{"top": 7}', end="")  # still in stdout's buffer (a pipe: block-buffered)
        print("a warning", file=sys.stderr, end="")
        leave(2)
        """
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, '{"top": 7}', "a warning")


def test_python_exits_as_usual_while_another_thread_is_alive() -> None:
    proc = run(
        """
        import atexit, threading, time
        from edgebundle.runtime.app import leave
        atexit.register(lambda: print("finalized"))
        threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
        leave(3)
        """
    )
    assert (proc.returncode, proc.stdout) == (3, "thread done\nfinalized\n")


def test_a_daemon_thread_does_not_hold_the_exit() -> None:
    proc = run(
        """
        import atexit, threading, time
        from edgebundle.runtime.app import leave
        atexit.register(lambda: print("finalized"))
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        print("out")
        leave(0)
        """
    )
    assert (proc.returncode, proc.stdout) == (0, "out\n")


def test_a_reader_that_left_does_not_change_the_code() -> None:
    script = (
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from edgebundle.runtime.app import leave\n"
        "import time\ntime.sleep(0.3)\n"
        "print('x' * 100)\n"  # flushed at leave(): EPIPE, the reader is gone
        "leave(0)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-I", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()  # the reader leaves before anything is written
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err
    assert err == b""
