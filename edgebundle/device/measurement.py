"""The device test pipeline: binary + device -> runs -> DeviceReport (then budgets, then reports).

Steps on the device, each one of the scripts of scripts.py through the transport:
 1. SETUP: a private temp dir (mktemp -d), ``uname -m``, ``uname -r`` and the glibc release; the
    binary's ELF arch is checked against the first before anything is copied, and what the binary needs
    of the device (check_libc): a kernel at least its bundled glibc's floor, or (--system-libc) the
    device's glibc at least its floor.
 2. UPLOAD: the binary (and the --input file) streamed through ``cat``; the size written is checked.
 3. COLD: the very first run of the copied file, ``APP --self-test``, timed by the device's clock.
 4. ``APP --info``: the manifest, which proves this is an edgebundle binary and carries the budgets,
    and its check of the model's bytes (a mismatch: IntegrityError).
 5. Startup: ``APP --eb-measure startup --runs N -- APP --self-test`` (the binary measures copies of
    itself, wall time and whole-tree peak RSS, see runtime/measure.py); one JSON line per run.
 6. Latency: ``APP --eb-bench N [INPUT]``: one warm-up, then N inferences inside one process.
 7. CLEANUP, always (also on failure, Ctrl-C or SIGTERM): end whatever still runs in the dir, remove it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from .. import ui
from ..elf import NotElfError, read_elf
from ..errors import ConfigError, DeviceError, EdgeBundleError, IntegrityError
from ..proc import TIMEOUT_S, Completed, Echo, tail
from ..target import Arch, Budgets, host_arch, load_target, normalize_arch
from ..toolchains.binfmt import qemu_cpu_env
from . import Launch, Transport, open_transport, scripts
from .budgets import check_budgets
from .needs import binary_libc, check_libc
from .qemu import QemuTransport, build_root_of
from .report import EMULATED_NOTE, Benchmark, DeviceReport, LatencyMs, Samples, StartupMs, percentile

NOT_OURS = "is not an edgebundle binary"
BUILD_HINT = "build one with: edgebundle build MODEL.tflite --recipe RECIPE"
STEP_TIMEOUT_S = TIMEOUT_S["device step"]
RUN_TIMEOUT_S = 300.0
INPUT_DIR = "input"


@dataclass(frozen=True, kw_only=True)
class DeviceTestPlan:
    """What ``edgebundle test`` was asked to do, resolved."""

    binary: Path
    device: str = "local"
    runs: int = 10
    input: Path | None = None
    target: str | None = None


@dataclass(frozen=True, kw_only=True)
class Cold:
    ms: float
    exit_code: int
    stdout: str
    stderr: str


def _open(device: str, binary: Path, arch: Arch, echo: Echo | None) -> Transport:
    """The transport for ``device``; for qemu, the host itself when the binary is native (there is
    nothing to emulate), and the binary's own cached build root as QEMU_LD_PREFIX when it has one."""
    say = echo or _silent
    if device == "qemu" and arch == host_arch():
        say(f"{binary} is a native {arch} binary: measured directly on this host, not under QEMU")
        return open_transport("local", echo)
    transport = open_transport(device, echo)
    if isinstance(transport, QemuTransport):
        env = {**os.environ, **qemu_cpu_env()}  # (the CPU QEMU emulates: toolchains/binfmt.py)
        if "QEMU_LD_PREFIX" not in os.environ:
            rootfs = build_root_of(binary, arch)
            if rootfs is not None:
                say(f"QEMU_LD_PREFIX={rootfs} (the build root that made {binary.name})")
                env["QEMU_LD_PREFIX"] = str(rootfs)
        transport = dataclasses.replace(transport, env=env)
    return transport


def _silent(_line: str) -> None:
    pass


MAX_PARALLEL_DEVICES = 8


def run_device_test(
    plan: DeviceTestPlan,
    echo: Echo | None,
    progress: Callable[[str], None],
    transport: Transport | None = None,
) -> DeviceReport:
    """Measure ``plan.binary`` on ``plan.device``; raise ConfigError/DeviceError when it cannot."""
    binary = plan.binary
    if not binary.is_file():
        raise ConfigError(f"{binary}: no such file; give the path of a binary made by edgebundle build")
    if plan.input is not None and not plan.input.is_file():
        raise ConfigError(f"--input {plan.input}: no such file")
    override = load_target(plan.target) if plan.target else None
    arch = binary_arch(binary)
    size = binary.stat().st_size
    transport = transport or _open(plan.device, binary, arch, echo)
    say = echo or _silent
    libc = None if transport.emulated else binary_libc(binary)
    with _term_as_interrupt(), DeviceDir(transport, echo) as dev:
        launch = transport.launch(binary, arch, dev.machine)
        libc_note = (
            None if libc is None else check_libc(libc, binary.name, transport.device, dev.kernel, dev.glibc)
        )
        with ui.step(say, f"copy to {transport.device}") as step:
            app = dev.upload(binary, binary.name, size)
            inputs = [dev.upload(plan.input, f"{INPUT_DIR}/{plan.input.name}")] if plan.input else []
            step.summary = f"{size / 1e6:.1f} MB into {dev.path}"
        command = [*launch.prefix, app]
        with ui.step(say, "cold start") as step:
            cold = dev.cold([*command, "--self-test"])
            manifest = _manifest(dev, command, binary, transport.device, cold)
            step.summary = f"{cold.ms:.0f} ms"
        with ui.step(say, f"warm starts x{plan.runs}") as step:
            runs = _startup(dev, launch, command, plan.runs, progress, guest=transport.emulated)
            warm_ms = [float(r["ms"]) for r in runs]
            peak = max(int(r["peak_rss_bytes"]) for r in runs)
            step.summary = f"p50 {percentile(warm_ms, 50):.0f} ms, peak RSS {peak / 1e6:.1f} MB"
        with ui.step(say, f"inference x{plan.runs}") as step:
            warmup, latencies, benchmark = _latency(
                dev, [*command, "--eb-bench", str(plan.runs), *inputs], plan.runs, progress
            )
            step.summary = f"p50 {percentile(latencies, 50):.3f} ms"

    target = manifest["target"]
    budgets = override.budgets if override else _manifest_budgets(target.get("budgets"), binary)
    warm = [float(r["ms"]) for r in runs]
    largest = max(runs, key=lambda r: int(r["peak_rss_bytes"]))
    guest = [int(r["guest_peak_rss_bytes"]) for r in runs if "guest_peak_rss_bytes" in r]
    startup = StartupMs(
        cold=round(cold.ms, 1),
        warm_p50=round(percentile(warm, 50), 1),
        warm_p90=round(percentile(warm, 90), 1),
    )
    notes = [n for n in (EMULATED_NOTE if transport.emulated else None, launch.note, libc_note) if n]
    return DeviceReport(
        binary=str(binary),
        device=transport.device,
        arch=arch,
        emulated=transport.emulated,
        target=override.name if override else str(target.get("name", "?")),
        runs=plan.runs,
        size_bytes=size,
        startup_ms=startup,
        peak_rss_bytes=int(largest["peak_rss_bytes"]),
        largest_process_rss_bytes=max(int(r["largest_rss_bytes"]) for r in runs),
        processes=int(largest["processes"]),
        guest_peak_rss_bytes=max(guest) if guest else None,
        latency_ms=LatencyMs(
            p50=round(percentile(latencies, 50), 4), p90=round(percentile(latencies, 90), 4)
        ),
        budgets=check_budgets(
            budgets,
            size_bytes=size,
            startup_warm_p50_ms=startup.warm_p50,
            peak_rss_bytes=int(largest["peak_rss_bytes"]),
            emulated=transport.emulated,
        ),
        samples=Samples(
            startup_warm_ms=tuple(warm),
            peak_rss_bytes=tuple(int(r["peak_rss_bytes"]) for r in runs),
            latency_ms=tuple(latencies),
            latency_warmup_ms=warmup,
        ),
        notes=tuple(notes),
        benchmark=benchmark,
    )


def run_device_tests(
    plans: list[DeviceTestPlan], on_done: Callable[[str], None]
) -> tuple[list[DeviceReport], list[str]]:
    """Several devices measured at once (each its own transport and temp dir): the reports of those
    that could be measured, in the plans' order, and one line per device that could not."""
    from concurrent.futures import ThreadPoolExecutor

    def one(plan: DeviceTestPlan) -> DeviceReport | str:
        try:
            report = run_device_test(plan, echo=None, progress=_silent)
        except (ConfigError, DeviceError, IntegrityError) as exc:
            on_done(f"{plan.device}: failed: {exc}")
            return f"{plan.device}: {exc}"
        on_done(f"{plan.device}: measured, {len(report.failed())} budget(s) exceeded")
        return report

    with ThreadPoolExecutor(max_workers=min(len(plans), MAX_PARALLEL_DEVICES)) as pool:
        results = list(pool.map(one, plans))
    return [r for r in results if not isinstance(r, str)], [r for r in results if isinstance(r, str)]


def binary_arch(path: Path) -> Arch:
    """From the ELF header, on the host, before anything runs: a wrong-arch binary on ``local`` is then
    a one-line error, not "Exec format error" (or, with binfmt_misc set up, a silently emulated run
    that would pass for native)."""
    try:
        found = read_elf(path).arch
    except NotElfError as exc:
        raise ConfigError(f"{path} {NOT_OURS} ({str(exc).removeprefix(f'{path}: ')}); {BUILD_HINT}") from None
    arch = normalize_arch(found)
    if arch is None:
        raise ConfigError(
            f"{path} is a {found} program; edgebundle binaries are x86_64 or aarch64 ({BUILD_HINT})"
        )
    return arch


class DeviceDir:
    """The private temp dir on the device; removed on exit whatever happened (Ctrl-C included)."""

    def __init__(self, transport: Transport, echo: Echo | None) -> None:
        self.transport = transport
        self.echo = echo
        self.path = ""
        self.machine = ""
        self.kernel = ""
        self.glibc = ""  # "2.36", or "" when the device has no glibc (or no getconf)

    def __enter__(self) -> DeviceDir:
        result = self._check(
            self.transport.shell(scripts.SETUP, [], timeout=STEP_TIMEOUT_S), "creating a temp dir"
        )
        fields = dict(line.split("=", 1) for line in result.lines() if "=" in line)
        path, machine = fields.get("dir", ""), fields.get("machine", "")
        if not path.startswith("/") or "/edgebundle." not in path or not machine:
            raise DeviceError(
                f"{self.transport.device}: unexpected answer to the setup step: {tail(result.stdout)}"
            )
        self.path, self.machine = path, machine
        self.kernel = fields.get("kernel", "")
        self.glibc = fields.get("libc", "").removeprefix("glibc ").strip()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path:
            self._cleanup()

    def _cleanup(self) -> None:
        # Neither a second Ctrl-C nor the terminal's SIGINT to our process group may cut this short.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            result = self.transport.shell(scripts.CLEANUP, [self.path], timeout=120, detach=True)
            failure = (
                None if result.returncode == 0 else tail(result.stderr or result.stdout) or "no reason given"
            )
        except EdgeBundleError as exc:
            failure = str(exc)
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        if failure and self.echo:
            self.echo(
                f"warning: could not remove {self.path} on {self.transport.device} ({failure}); "
                "remove it by hand"
            )

    def upload(self, local: Path, name: str, size: int | None = None) -> str:
        size = local.stat().st_size if size is None else size
        result = self._check(
            self.transport.shell(scripts.UPLOAD, [self.path, name], stdin=local, timeout=STEP_TIMEOUT_S),
            f"copying {local.name}",
        )
        written = result.stdout.strip().split()[-1:] or ["?"]
        if written != [str(size)]:
            raise DeviceError(
                f"copying {local} to {self.transport.device} wrote {written[0]} of {size} bytes; "
                "is its disk full?"
            )
        return f"{self.path}/{name}"

    def cold(self, command: list[str]) -> Cold:
        result = self._check(
            self.transport.shell(scripts.COLD, [self.path, *command], timeout=STEP_TIMEOUT_S), "the first run"
        )
        head, _, rest = result.stdout.partition("\n")
        out, _, err = rest.partition(scripts.STDERR_MARK)
        try:
            _, t0, t1, code = head.split()
            ms = (float(t1) - float(t0)) * 1000.0
            exit_code = int(code)
        except ValueError:
            raise DeviceError(
                f"{self.transport.device}: unexpected answer to the first run: {head!r}"
            ) from None
        return Cold(
            ms=ms,
            exit_code=exit_code,
            stdout=out.replace(scripts.STDOUT_MARK, "").strip(),
            stderr=err.strip(),
        )

    def run(self, command: list[str], **kwargs: Any) -> Completed:
        return self.transport.shell(scripts.RUN, [self.path, *command], **kwargs)

    def _check(self, result: Completed, what: str) -> Completed:
        if result.returncode != 0:
            detail = tail(result.stderr or result.stdout) or f"exit code {result.returncode}"
            raise DeviceError(f"{self.transport.device}: {what} failed: {detail}")
        return result


def _manifest(dev: DeviceDir, command: list[str], binary: Path, device: str, cold: Cold) -> dict[str, Any]:
    """``--info`` proves an edgebundle binary; with the first run's result it tells what went wrong."""
    info = dev.run([*command, "--info"], timeout=STEP_TIMEOUT_S)
    # --info prints the manifest even when the model check fails (then it exits 1).
    manifest = _json_object(info.stdout)
    if manifest is None or not isinstance(manifest.get("target"), dict):
        manifest = None
    elif manifest.get("model_check", {}).get("matches_manifest") is False:
        raise IntegrityError(
            f"{binary}: the model's digest does not match the manifest on {device} "
            "(the binary was tampered with or damaged); build it again"
        )
    is_ours = manifest is not None and info.returncode == 0
    if cold.exit_code == 0 and is_ours:
        assert manifest is not None
        return manifest
    if is_ours:
        problem = tail(cold.stderr) or tail(cold.stdout) or f"exit code {cold.exit_code}"
        raise DeviceError(f"{binary} fails its self-test on {device} (exit {cold.exit_code}): {problem}")
    raise _start_failure(binary, device, cold) or ConfigError(
        f"{binary} {NOT_OURS} (`{binary.name} --info` printed no edgebundle manifest); {BUILD_HINT}"
    )


def _start_failure(binary: Path, device: str, cold: Cold) -> DeviceError | None:
    """The binary could not start there at all (rather than not being ours)."""
    text = cold.stderr
    if "Could not open '/lib/ld-linux" in text:
        # QEMU user mode found no loader for a dynamically linked foreign binary.
        return DeviceError(
            f"{binary} needs its arch's C library to run under QEMU ({tail(text, 1)}); point QEMU_LD_PREFIX "
            "at a root that has it and zlib (Debian: apt-get install libc6-arm64-cross, then "
            "QEMU_LD_PREFIX=/usr/aarch64-linux-gnu)"
        )
    if cold.exit_code in (126, 127):
        return DeviceError(
            f"{binary} cannot be executed on {device} "
            f"(exit {cold.exit_code}: {tail(text, 1) or 'no message'}); "
            "is its temp dir on a noexec mount, or the binary's loader missing?"
        )
    if "GLIBC_" in text:
        return DeviceError(
            f"{binary} needs a newer glibc than {device} has ({tail(text, 1)}); "
            "build for the device's glibc (the target's glibc_floor) or update the device"
        )
    if "[PYI-" in text:
        return DeviceError(f"{binary} cannot start on {device}: {tail(text, 1)}")
    return None


def _startup(
    dev: DeviceDir,
    launch: Launch,
    command: list[str],
    runs: int,
    progress: Callable[[str], None],
    *,
    guest: bool,
) -> list[dict[str, Any]]:
    """``guest``: the runs are emulated; the measurer also estimates their RSS without QEMU."""
    measurer = list(launch.measurer) if launch.measurer else [*command, "--eb-measure"]
    argv = [
        *measurer,
        "startup",
        "--runs",
        str(runs),
        "--timeout",
        str(RUN_TIMEOUT_S),
        *(["--guest-rss"] if guest else []),
        "--",
        *command,
        "--self-test",
    ]
    seen: list[dict[str, Any]] = []

    def on_line(line: str) -> None:
        event = _json_object(line)
        if event is None or event.get("event") != "run":
            return
        seen.append(event)
        if event.get("exit_code") == 0:
            estimate = event.get("guest_peak_rss_bytes")
            without = f", {estimate / 1e6:.1f} MB without QEMU" if estimate is not None else ""
            progress(
                f"startup {event['run']}/{runs}: {event['ms']:.0f} ms, "
                f"peak RSS {event['peak_rss_bytes'] / 1e6:.1f} MB{without} ({event['processes']} processes)"
            )

    result = dev.run(argv, on_line=on_line, timeout=STEP_TIMEOUT_S + runs * RUN_TIMEOUT_S)
    failed = [e for e in seen if e.get("exit_code") != 0]
    if failed:
        e = failed[0]
        why = "timed out" if e.get("timed_out") else f"exit {e.get('exit_code')}"
        raise DeviceError(
            f"startup run {e.get('run')} on {dev.transport.device} failed ({why}): "
            f"{tail(str(e.get('stderr', '')))}"
        )
    if result.returncode != 0 or len(seen) != runs:
        detail = tail(result.stderr) or f"exit code {result.returncode}"
        raise DeviceError(
            f"measuring startup on {dev.transport.device} failed: {detail} "
            "(a binary from an older edgebundle lacks the measuring mode; rebuild it)"
        )
    return seen


def _latency(
    dev: DeviceDir, argv: list[str], runs: int, progress: Callable[[str], None]
) -> tuple[float, list[float], Benchmark | None]:
    warmup: list[float] = []
    latencies: list[float] = []
    init: dict[str, Any] = {}
    summary: dict[str, Any] = {}

    def on_line(line: str) -> None:
        event = _json_object(line)
        if event is None:
            return
        if event.get("event") == "init":
            init.update(event)
        elif event.get("event") == "summary":
            summary.update(event)
        elif event.get("event") == "warmup":
            warmup.append(float(event["ms"]))
        elif event.get("event") == "inference":
            latencies.append(float(event["ms"]))
            if len(latencies) in (1, runs) or len(latencies) % max(1, runs // 4) == 0:
                progress(f"inference {len(latencies)}/{runs}: {event['ms']:.3f} ms")

    result = dev.run(argv, on_line=on_line, timeout=STEP_TIMEOUT_S)
    if result.returncode != 0 or len(latencies) != runs or not warmup:
        detail = tail(result.stderr) or f"exit code {result.returncode}"
        raise DeviceError(f"measuring inference latency on {dev.transport.device} failed: {detail}")
    benchmark = Benchmark.from_events(init, warmup, latencies, summary) if init else None
    return warmup[0], latencies, benchmark


def _manifest_budgets(raw: object, binary: Path) -> Budgets:
    if not isinstance(raw, dict):
        raise ConfigError(f"{binary}: its manifest has no target budgets; pass --target to give some")
    values: dict[str, float | None] = {}
    for key in ("max_size_mb", "max_startup_ms", "max_rss_mb"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{binary}: manifest target.budgets.{key} is {value!r}; pass --target instead")
        values[key] = None if value is None else float(value)
    return Budgets(**values)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job) ends the test like Ctrl-C does, so that the cleanup still runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
