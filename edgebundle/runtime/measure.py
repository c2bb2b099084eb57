"""The binary's hidden measuring mode: run a command N times and report, for each run, the wall time
from exec to exit and the peak resident memory of its WHOLE process tree.

Why it lives in the binary: a device may have no Python and only busybox, so the one program we can
count on there is the binary itself (``APP --eb-measure startup --runs N -- APP --self-test``). The
builder runs the very same module with its own Python where it is the device's host (QEMU runs:
``python -m edgebundle.runtime.measure ...``). Standard library only, no imports from the package, so
it costs the measured binary nothing unless this mode is asked for.

Memory, and why not just ``wait4()``: a PyInstaller onefile binary is two processes (the bootloader,
which unpacks, and the Python child it starts), and the kernel's ``ru_maxrss`` for a waited child is
the peak of the LARGEST process of its subtree, not a sum. So while a run goes, a thread polls
``/proc`` for every descendant of the run (found by parent pid, since ``/proc/PID/task/*/children``
needs CONFIG_PROC_CHILDREN, which many kernels lack) and keeps each one's ``VmHWM`` (the kernel's own
per-process high-water mark, so the polls need not catch the moment of the peak, only the process
while it lives). The tree's peak is the sum of those high-water marks, floored by what ``wait4()``
proves: the largest process's final peak is ``ru_maxrss``, which covers a large process that grew
after its last poll or lived between two polls. The sum of per-process peaks is an upper bound of the
simultaneous peak (processes peak at different times, shared pages count in each), which is the safe
side for a memory budget.

Emulated runs (``--guest-rss``, for QEMU user mode): a process's RSS is then QEMU's, which holds the
guest program's memory and the emulator's own: its translated-code buffer (an anonymous executable
mapping: a guest's own code is never executed by the host), its executable and its C heap. The polls
then also read ``/proc/PID/smaps`` and keep, per process, the largest RSS without those three: an
estimate of what the program would hold natively. It errs on the high side (QEMU's thread arenas
and page tables of guest memory still count) and, being polled rather than a kernel high-water mark,
may miss a peak shorter than the poll interval.

Output: one JSON line per run on stdout (the builder shows progress from them, over SSH too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

DEFAULT_INTERVAL_MS = 10.0
STDERR_TAIL_BYTES = 2000
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 143

# Variables a PyInstaller onefile parent leaves for its child. A copy of the binary started with them
# would take itself for that child and skip unpacking, i.e. measure a run that never happens on the
# device. PYINSTALLER_RESET_ENVIRONMENT=1 makes PyInstaller >= 6.10 start afresh whatever is set.
_FROZEN_PREFIXES = ("_PYI_", "_MEIPASS")
_LIBRARY_PATHS = ("LD_LIBRARY_PATH", "LIBPATH")


def clean_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the user started the binary with, as far as it can be recovered."""
    env = {k: v for k, v in environ.items() if not k.startswith(_FROZEN_PREFIXES)}
    for name in _LIBRARY_PATHS:
        original = env.pop(f"{name}_ORIG", None)
        if original is not None:
            env[name] = original
        elif name in environ and f"{name}_ORIG" not in environ and getattr(sys, "frozen", False):
            # The bootloader set it from nothing; the user had none.
            env.pop(name, None)
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    return env


@dataclass(frozen=True, kw_only=True)
class Run:
    """One measured run."""

    ms: float
    exit_code: int
    peak_rss_bytes: int
    largest_rss_bytes: int
    processes: int
    timed_out: bool = False
    guest_peak_rss_bytes: int | None = None  # --guest-rss: the tree's peak without the emulator


def read_hwm_kib(pid: int) -> int | None:
    """A live process's VmHWM in KiB; None when it is gone or a zombie (no memory left to read)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_guest_rss_kib(pid: int) -> int | None:
    """RSS in KiB of an emulated process without the emulator's own memory (see the module's
    docstring); None when it is gone."""
    try:
        emulator = os.readlink(f"/proc/{pid}/exe")
        with open(f"/proc/{pid}/smaps", "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    return guest_rss_kib(text, emulator)


def guest_rss_kib(smaps: str, emulator: str) -> int:
    """The Rss of every mapping in ``smaps`` but anonymous executable ones (translated code), the
    ``emulator`` executable's and the C heap's."""
    total = 0
    for name, rss, flags in _smaps_blocks(smaps):
        anonymous_code = name == "" and "ex" in flags
        if not anonymous_code and name not in (emulator, "[heap]"):
            total += rss
    return total


def _smaps_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(path or "", Rss KiB, VmFlags) of each mapping in a /proc/PID/smaps text."""
    blocks: list[tuple[str, int, list[str]]] = []
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if not key.endswith(":"):  # a mapping's first line: "start-end perms offset dev inode [path]"
            fields = line.split(None, 5)
            blocks.append((fields[5].strip() if len(fields) > 5 else "", 0, []))
        elif blocks and key == "Rss:":
            blocks[-1] = (blocks[-1][0], int(rest.split()[0]), blocks[-1][2])
        elif blocks and key == "VmFlags:":
            blocks[-1] = (blocks[-1][0], blocks[-1][1], rest.split())
    return blocks


def read_ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so cut at the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


class TreeWatch:
    """Polls /proc for the descendants of ``root`` and keeps each one's high-water mark.

    Cheap enough for a small device: each poll lists /proc once, reads the parent of a pid only the
    first time it shows up, and reads the status of the tree's own processes only.
    """

    def __init__(
        self, root: int, interval_s: float, foreign: set[int] | None = None, guest: bool = False
    ) -> None:
        self.root = root
        self.interval_s = interval_s
        self.hwm_kib: dict[int, int] = {}
        self.guest = guest
        self.guest_kib: dict[int, int] = {}  # largest guest RSS polled, per process (``guest``)
        self._tree: set[int] = {root}
        # Pids that existed before the run can only be someone else's: never looked at again.
        self._foreign: set[int] = set(foreign or ()) - {root}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="eb-treewatch", daemon=True)

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        self.sample()

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(self._tree)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            self._discover()
            for pid in list(self._tree):
                kib = read_hwm_kib(pid)
                if kib is not None and kib > self.hwm_kib.get(pid, 0):
                    self.hwm_kib[pid] = kib
                if self.guest:
                    kib = read_guest_rss_kib(pid)
                    if kib is not None and kib > self.guest_kib.get(pid, 0):
                        self.guest_kib[pid] = kib

    def _discover(self) -> None:
        listed = list_pids()
        if not listed:
            return
        # Forget pids that are gone, so that a reused number is looked at again.
        self._foreign &= listed
        parents: dict[int, int] = {}
        for pid in listed - self._tree - self._foreign:
            ppid = read_ppid(pid)
            if ppid is not None:
                parents[pid] = ppid
        # A child and its parent may both be new in this poll: close over the tree until stable.
        grew = True
        while grew:
            grew = False
            for pid, ppid in list(parents.items()):
                if ppid in self._tree:
                    self._tree.add(pid)
                    del parents[pid]
                    grew = True
        self._foreign.update(parents)


def list_pids() -> set[int]:
    try:
        return {int(e.name) for e in os.scandir("/proc") if e.name.isdigit()}
    except OSError:
        return set()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, by pid."""
    return sorted(p for p in list_pids() if read_ppid(p) == pid)


def tree_peak_bytes(hwm_kib: Mapping[int, int], wait4_maxrss_kib: int) -> tuple[int, int]:
    """(whole-tree peak, largest single process peak) in bytes from polled high-water marks and the
    ``ru_maxrss`` of the waited root (the largest final peak of any process in its subtree)."""
    seen = sum(hwm_kib.values())
    largest_seen = max(hwm_kib.values(), default=0)
    largest = max(largest_seen, wait4_maxrss_kib)
    # The polls may have missed the last growth of the largest process (or all of a short-lived
    # one); ru_maxrss proves it, so add what it proves beyond what was seen.
    total = seen + (largest - largest_seen)
    return total * 1024, largest * 1024


def measure_run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    interval_s: float = DEFAULT_INTERVAL_MS / 1000,
    stderr_path: str = os.devnull,
    timeout_s: float | None = None,
    guest: bool = False,
) -> Run:
    """Run ``argv`` once (stdin and stdout on /dev/null, stderr to ``stderr_path``) and measure it.

    The run gets its own process group, so that a timeout or our own termination can end all of it.
    """
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]
    executable = _resolve(argv[0], env)
    # Listed before the run so that the polls during it read only the run's own new processes
    # (on a single-core device every read of /proc is time taken from the run being measured).
    before = list_pids()
    start = time.perf_counter()
    pid = os.posix_spawn(executable, list(argv), dict(env), file_actions=actions, setpgroup=0)
    watch = TreeWatch(pid, interval_s, foreign=before, guest=guest)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _kill_group(pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, expire) if timeout_s is not None else None
    try:
        if timer is not None:
            timer.daemon = True
            timer.start()
        watch.start()
        _, status, usage = os.wait4(pid, 0)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
    except BaseException:
        # Terminated (or anything else) while the run goes: end it rather than leave it behind in a
        # directory the builder is about to remove.
        _end_run(pid, watch)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    watch.stop()
    peak, largest = tree_peak_bytes(watch.hwm_kib, usage.ru_maxrss)
    return Run(
        ms=elapsed_ms,
        exit_code=os.waitstatus_to_exitcode(status),
        peak_rss_bytes=peak,
        largest_rss_bytes=largest,
        processes=len(watch.hwm_kib),
        timed_out=timed_out.is_set(),
        guest_peak_rss_bytes=sum(watch.guest_kib.values()) * 1024 if guest else None,
    )


def _resolve(program: str, env: Mapping[str, str]) -> str:
    if os.sep in program:
        return program
    for folder in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", program)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(program)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, sig)


class Terminated(Exception):
    """The measurer was asked to stop (SIGTERM/SIGHUP/SIGINT)."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def _end_run(pid: int, watch: TreeWatch) -> None:
    """SIGTERM first, so that a onefile bootloader removes what it unpacked, then SIGKILL."""
    watch.stop()
    _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    reaped = False
    while not reaped and time.monotonic() < deadline:
        try:
            reaped = os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:
            reaped = True
        if not reaped:
            time.sleep(0.02)
    _kill_group(pid, signal.SIGKILL)
    for other in watch.pids():
        with contextlib.suppress(OSError):
            os.kill(other, signal.SIGKILL)
    if not reaped:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - STDERR_TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def startup(
    command: Sequence[str],
    runs: int,
    *,
    interval_s: float,
    timeout_s: float | None,
    guest: bool = False,
    out: Callable[[dict[str, Any]], None] = emit,
) -> int:
    """Measure ``runs`` runs of ``command``; stop at the first that fails (its stderr tail is sent)."""
    env = clean_environment(os.environ)
    stderr_path = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"eb-measure-{os.getpid()}.err")
    try:
        for i in range(1, runs + 1):
            run = measure_run(
                command,
                env=env,
                interval_s=interval_s,
                stderr_path=stderr_path,
                timeout_s=timeout_s,
                guest=guest,
            )
            event: dict[str, Any] = {
                "event": "run",
                "run": i,
                "runs": runs,
                "ms": round(run.ms, 3),
                "exit_code": run.exit_code,
                "peak_rss_bytes": run.peak_rss_bytes,
                "largest_rss_bytes": run.largest_rss_bytes,
                "processes": run.processes,
            }
            if run.guest_peak_rss_bytes is not None:
                event["guest_peak_rss_bytes"] = run.guest_peak_rss_bytes
            if run.exit_code != 0 or run.timed_out:
                event["timed_out"] = run.timed_out
                event["stderr"] = _tail(stderr_path)
                out(event)
                return EXIT_RUN_FAILED
            out(event)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(stderr_path)
    return 0


WARMUP_RUNS = 3  # the first inference (slow: lazy allocations) and two more, as benchmark_model warms up


def status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes; None without /proc."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(field.encode() + b":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def bench(
    infer: Callable[[], float],
    runs: int,
    out: Callable[[dict[str, Any]], None] = emit,
    *,
    startup: dict[str, float | None] | None = None,
) -> int:
    """Inference inside one process, as TFLite's benchmark_model reports it: the start-up split and
    the memory once the model is loaded (``init``), WARMUP_RUNS warm-up inferences (the first one
    is the "first inference"), ``runs`` timed ones, then the peak memory (``summary``).

    ``infer`` runs one inference and returns its own duration in ms, so that only inference is timed.
    """
    out({"event": "init", "startup_ms": startup or {}, "rss_bytes": status_bytes("VmRSS")})
    for i in range(WARMUP_RUNS):
        out({"event": "warmup", "run": i, "ms": round(infer(), 4)})
    for i in range(1, runs + 1):
        out({"event": "inference", "run": i, "runs": runs, "ms": round(infer(), 4)})
    out({"event": "summary", "peak_rss_bytes": status_bytes("VmHWM")})
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "measure") -> int:
    parser = argparse.ArgumentParser(prog=f"{prog} --eb-measure", description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("startup", help="time and measure whole runs of COMMAND")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--interval-ms", type=float, default=DEFAULT_INTERVAL_MS)
    p.add_argument("--timeout", type=float, default=None, help="seconds per run")
    p.add_argument("--guest-rss", action="store_true", help="runs are emulated: estimate RSS without QEMU")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command or args.runs < 1 or args.interval_ms <= 0:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: need --runs >= 1, --interval-ms > 0 and -- COMMAND", file=sys.stderr)
        return EXIT_USAGE
    handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        return startup(
            command,
            args.runs,
            interval_s=args.interval_ms / 1000,
            timeout_s=args.timeout,
            guest=args.guest_rss,
        )
    except FileNotFoundError as exc:
        print(f"{parser.prog}: error: {exc.filename or exc}: command not found", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        return EXIT_TERMINATED
    except BrokenPipeError:
        # Whoever reads us is gone (an SSH connection dropped): stop measuring for nobody.
        return EXIT_TERMINATED
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
