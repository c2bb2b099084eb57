"""The measuring mode (edgebundle/runtime/measure.py) on real process trees: the whole tree's peak
RSS includes grandchildren and adds up processes that are resident at once (where wait4 and
/usr/bin/time -v see only the largest one), and agrees with /usr/bin/time -v within 10% where both
measure the same thing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, in_ci

pytestmark = pytest.mark.device

MIB = 1 << 20
ALLOC = FIXTURES / "device" / "alloc_tree.py"
STARTUP = (sys.executable, "-m", "edgebundle.runtime.measure", "startup")


def measure(
    *command: str, runs: int = 1, extra: tuple[str, ...] = ()
) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgebundle.runtime.measure",
            "startup",
            "--runs",
            str(runs),
            *extra,
            "--",
            *command,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def gnu_time_max_rss(*command: str) -> int:
    """What /usr/bin/time -v says: ru_maxrss of the child, i.e. the LARGEST process of the tree."""
    if not os.access("/usr/bin/time", os.X_OK):
        reason = "GNU time is not installed (scripts/ci-services.sh installs it)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    proc = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=True)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    assert match, proc.stderr
    return int(match.group(1)) * 1024


def test_memory_allocated_in_a_grandchild_is_counted() -> None:
    command = (sys.executable, str(ALLOC), "2", "200")
    code, (run,), err = measure(*command)
    assert code == 0, err
    assert run["exit_code"] == 0
    assert run["processes"] == 3
    assert run["largest_rss_bytes"] >= 200 * MIB
    assert run["peak_rss_bytes"] >= run["largest_rss_bytes"] + 2 * 5 * MIB  # plus two Pythons
    # /usr/bin/time -v (wait4) sees the grandchild as the largest process: the same figure.
    reference = gnu_time_max_rss(*command)
    assert abs(run["largest_rss_bytes"] - reference) <= 0.10 * reference


def test_processes_resident_at_once_add_up_where_time_v_sees_only_the_largest() -> None:
    command = (sys.executable, str(ALLOC), "2", "100", "--each")
    code, (run,), err = measure(*command)
    assert code == 0, err
    assert run["processes"] == 3
    assert run["peak_rss_bytes"] >= 3 * 100 * MIB
    reference = gnu_time_max_rss(*command)
    assert reference < 150 * MIB  # what wait4 alone would have reported for the tree
    assert abs(run["largest_rss_bytes"] - reference) <= 0.10 * reference


def test_a_single_process_agrees_with_time_v_within_10_percent() -> None:
    command = (sys.executable, str(ALLOC), "0", "150")
    code, runs, err = measure(*command, runs=3)
    assert code == 0, err
    assert [r["processes"] for r in runs] == [1, 1, 1]
    reference = gnu_time_max_rss(*command)
    for run in runs:
        assert run["peak_rss_bytes"] == run["largest_rss_bytes"]
        assert abs(run["peak_rss_bytes"] - reference) <= 0.10 * reference
        assert run["ms"] >= 300


def test_under_qemu_the_estimate_without_the_emulator_matches_the_native_run() -> None:
    # The same x86_64 program natively and under qemu-x86_64 (user mode, like the arm64 runs): QEMU
    # adds tens of MB (its translated code, executable and heap); the estimate without them must land
    # near the native figure, a little above rather than below (it is a budget's figure).
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if qemu is None:
        reason = "qemu-x86_64 is not installed (apt-get install qemu-user-static)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    # The system's Python: a pyenv one may start through a shim, which QEMU would run instead.
    command = ("/usr/bin/python3", str(ALLOC), "0", "100")
    code, (native,), err = measure(*command, extra=("--guest-rss",))
    assert code == 0, err
    code, (emulated,), err = measure(qemu, *command, extra=("--guest-rss",))
    assert code == 0, err
    assert emulated["peak_rss_bytes"] > native["peak_rss_bytes"] + 10 * MIB
    estimate = emulated["guest_peak_rss_bytes"]
    assert 0.97 * native["peak_rss_bytes"] <= estimate <= 1.10 * native["peak_rss_bytes"]
    # Without --guest-rss there is no estimate.
    code, (plain,), err = measure(*command)
    assert "guest_peak_rss_bytes" not in plain


def test_a_failing_run_stops_the_measurement_with_its_stderr() -> None:
    code, runs, _ = measure("sh", "-c", "echo 'cannot load model' >&2; exit 3", runs=5)
    assert code == 1
    assert len(runs) == 1
    assert runs[0]["exit_code"] == 3
    assert "cannot load model" in runs[0]["stderr"]


def test_a_run_that_hangs_is_killed_at_the_timeout() -> None:
    code, (run,), _ = measure("sleep", "30", extra=("--timeout", "0.5"))
    assert code == 1
    assert run["timed_out"] is True
    assert run["exit_code"] == -signal.SIGKILL
    assert run["ms"] < 5000


def test_the_environment_of_a_onefile_parent_does_not_leak_into_runs(tmp_path: Path) -> None:
    shown = tmp_path / "env.txt"
    env = {
        **os.environ,
        "_PYI_ARCHIVE_FILE": "/tmp/app",
        "_PYI_APPLICATION_HOME_DIR": "/tmp/_MEI1",
        "LD_LIBRARY_PATH": "/tmp/_MEI1:/opt/lib",
        "LD_LIBRARY_PATH_ORIG": "/opt/lib",
    }
    proc = subprocess.run(
        [*STARTUP, "--runs", "1", "--", "sh", "-c", f"env > {shown}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    seen = dict(line.split("=", 1) for line in shown.read_text().splitlines() if "=" in line)
    assert not [k for k in seen if k.startswith("_PYI_")]
    assert seen["LD_LIBRARY_PATH"] == "/opt/lib"
    assert "LD_LIBRARY_PATH_ORIG" not in seen
    assert seen["PYINSTALLER_RESET_ENVIRONMENT"] == "1"


def test_terminating_the_measurer_ends_the_run_it_was_measuring(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    measurer = subprocess.Popen(
        [*STARTUP, "--runs", "3", "--", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(marker.read_text())
    measurer.send_signal(signal.SIGTERM)
    assert measurer.wait(10) == 143
    assert measurer.stdout is not None
    assert measurer.stdout.read() == ""  # no run was reported as done
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and _state(child) != "Z":
        assert time.monotonic() < deadline, "the measured run outlived the measurer"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rfind(")") + 2]


def test_the_measurer_needs_a_command() -> None:
    code, runs, err = measure()
    assert code == 2
    assert runs == []
    assert "need --runs >= 1, --interval-ms > 0 and -- COMMAND" in err
