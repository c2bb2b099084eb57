"""``edgebundle deploy``, ``status`` and ``rollback``: a built binary onto gateways over SSH, as a
systemd service, health-gated, rolled back by itself when the new release does not become ready.

Per device, in this order, stopping at the first failure (one line naming the device and why):
 1. preflight (scripts.PREFLIGHT), before anything changes: the device's arch is the binary's, its
    kernel (or, for --system-libc, its glibc) is new enough, there is room for the binary and its
    unpacked runtime, sha256sum is there;
 2. upload to a temporary name, sha256 checked on the device, renamed to releases/SHA12/NAME
    (skipped when that release is already there, intact); its --self-test run there;
 3. ``current`` switched to it by a rename (the previous release stays, for rollback);
 4. with --service: the unit written (unit.py), ``systemctl restart`` (Type=notify: it returns once
    the binary said READY=1), then /readyz probed through an SSH tunnel (the gateway needs no curl);
    once ready, the unit is kept beside the release (releases/SHA12/unit.service) for ``rollback``;
 5. not ready within --ready-timeout: the device put back as the deploy found it: ``current`` switched
    back, the new release forgotten (history), the unit's previous text (another port, say) or no
    unit at all, the previous release restarted and probed; reported "rolled back" (a failure). A
    first deploy that fails leaves no ``current`` and no unit.

Every step is idempotent: a deploy of the release that is already current and ready, with the same
unit, changes nothing and restarts nothing.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..build import sha256_file
from ..device import Transport, open_transport
from ..device.measurement import binary_arch
from ..device.needs import check_libc
from ..device.scripts import Script
from ..errors import ConfigError, DeviceError, EdgeBundleError
from ..inspection import inspect_binary
from ..proc import Completed, Echo
from ..target import Arch, normalize_arch
from . import scripts
from .probe import probe_ready
from .unit import ServiceSpec, render

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SHA12_RE = re.compile(r"[0-9a-f]{12}")
DEFAULT_PREFIX = "/opt/edgebundle"
DEFAULT_PORT = 8080
SPACE_MARGIN = 1.2  # room asked for beyond the binary and its unpacked runtime
STEP_TIMEOUT_S = 600.0  # one script on the device: an upload over a slow link, a self-test under QEMU


@dataclass(frozen=True, kw_only=True)
class DeployOptions:
    name: str
    prefix: str = DEFAULT_PREFIX
    service: bool = False
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    keep: int = 3
    ready_timeout_s: int = 60
    parallel: int = 4
    canary: int = 0
    max_failures: int = 0
    serve_args: tuple[str, ...] = ()


def check_options(opts: DeployOptions) -> None:
    if not NAME_RE.fullmatch(opts.name):
        raise ConfigError(
            f"--name {opts.name!r}: expected lower-case letters, digits, '-' and '_' (it names the unit "
            "edgebundle-NAME.service and the directory PREFIX/NAME)"
        )
    if (
        not opts.prefix.startswith("/")
        or not re.fullmatch(r"/[A-Za-z0-9._/-]*", opts.prefix)
        or ".." in opts.prefix
    ):
        raise ConfigError(f"--prefix {opts.prefix!r}: expected an absolute path of plain characters")
    if opts.keep < 2:
        raise ConfigError(f"--keep {opts.keep}: at least 2 (the current release and the one to roll back to)")
    if not 1 <= opts.port <= 65535:
        raise ConfigError(f"--port {opts.port}: expected 1-65535")
    if opts.ready_timeout_s < 1:
        raise ConfigError(f"--ready-timeout {opts.ready_timeout_s}: expected >= 1 second")
    if opts.parallel < 1 or opts.canary < 0 or opts.max_failures < 0:
        raise ConfigError("--parallel must be >= 1, --canary and --max-failures >= 0")


@dataclass
class DeviceResult:
    device: str
    outcome: str  # deployed | unchanged | restored (rollback) | rolled back | failed | skipped
    message: str = ""
    release: str | None = None
    previous: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in ("deployed", "unchanged", "restored")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class Device:
    """One gateway during a deploy: its transport and what the preflight found."""

    transport: Transport
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.transport.device

    def run(self, script: Script, *args: str, stdin: Path | None = None, what: str) -> Completed:
        result = self.transport.shell(script, list(args), stdin=stdin, timeout=STEP_TIMEOUT_S)
        if result.returncode != 0:
            reason = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no reason given"]
            raise DeviceError(f"{self.url}: {what} failed (exit {result.returncode}): {reason[0]}")
        return result


def parse_facts(result: Completed) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in result.lines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key] = value
    return facts


def release_of(link: str) -> str | None:
    """``releases/SHA12/NAME`` (what ``current`` points to) -> SHA12."""
    parts = link.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "releases" and SHA12_RE.fullmatch(parts[1]) else None


def open_gateway(device: str, echo: Echo | None) -> Device:
    if not device.startswith("ssh://"):
        raise ConfigError(f"{device!r}: a gateway is written ssh://[user@]host[:port]")
    return Device(transport=open_transport(device, echo))


@dataclass(frozen=True)
class Binary:
    """What a deploy needs to know of the binary, read once on the host."""

    path: Path
    sha256: str
    size: int
    unpacked_bytes: int
    arch: Arch
    rss_budget_mb: float | None
    description: str
    libc: dict[str, Any]  # inspect's: what it needs of the device's kernel or C library

    @property
    def sha12(self) -> str:
        return self.sha256[:12]


def read_binary(path: Path) -> Binary:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; give the path of a binary made by edgebundle build")
    report = inspect_binary(path)
    if not report["model_sha256_matches_manifest"]:
        raise ConfigError(f"{path}: the model's sha256 does not match the manifest; not deploying it")
    manifest = report["manifest"]
    budgets = manifest.get("target", {}).get("budgets", {}) or {}
    return Binary(
        path=path,
        sha256=sha256_file(path),
        size=report["size_bytes"],
        unpacked_bytes=sum(report["unpacked_bytes"].values()),
        arch=binary_arch(path),
        rss_budget_mb=budgets.get("max_rss_mb"),
        libc=report["libc"],
        description=(
            f"edgebundle {path.name}: {manifest['model'].get('source_name', manifest['model']['file'])} "
            f"({manifest['recipe'].get('name', 'recipe')})"
        ),
    )


def preflight(dev: Device, binary: Binary, opts: DeployOptions) -> None:
    dev.facts = parse_facts(
        dev.run(scripts.PREFLIGHT, opts.prefix, opts.name, binary.sha12, what="preflight")
    )
    facts = dev.facts
    machine = facts.get("machine", "?")
    if normalize_arch(machine) != binary.arch:
        raise DeviceError(
            f"{dev.url}: the gateway is {machine} but {binary.path.name} is an {binary.arch} binary; "
            "nothing changed"
        )
    glibc = facts.get("libc", "").removeprefix("glibc ")
    check_libc(binary.libc, binary.path.name, dev.url, facts.get("kernel", ""), glibc)
    if facts.get("sha256sum") != "yes":
        raise DeviceError(f"{dev.url}: has no sha256sum (coreutils or busybox) to check the copy with")
    if opts.service and facts.get("systemd") != "yes":
        raise DeviceError(
            f"{dev.url}: --service needs systemd running on the gateway (no /run/systemd/system)"
        )
    if opts.service and facts.get("root") != "yes":
        raise DeviceError(f"{dev.url}: --service needs root on the gateway (ssh://root@... or a root login)")
    need = int((binary.size + binary.unpacked_bytes) * SPACE_MARGIN) // 1024
    free = int(facts.get("free_kb") or 0)
    if facts.get("have") != binary.sha256 and free < need:
        raise DeviceError(
            f"{dev.url}: {free // 1024} MB free under {opts.prefix}, the release and its unpacked runtime "
            f"need {need // 1024} MB"
        )


def install(dev: Device, binary: Binary, opts: DeployOptions) -> bool:
    """Upload unless the release is there, intact; then its self-test on the device. Whether uploaded."""
    uploaded = False
    if dev.facts.get("have") != binary.sha256:
        out = dev.run(
            scripts.INSTALL, opts.prefix, opts.name, binary.sha256, stdin=binary.path, what="upload"
        )
        if "installed" not in out.stdout:
            raise DeviceError(f"{dev.url}: upload: unexpected answer {out.stdout.strip()!r}")
        uploaded = True
    release = f"{opts.prefix}/{opts.name}/releases/{binary.sha12}/{opts.name}"
    test = dev.transport.shell(scripts.SELFTEST, [release], timeout=STEP_TIMEOUT_S)
    if test.returncode != 0:
        reason = (test.stderr.strip() or test.stdout.strip()).splitlines()[-1:] or [f"exit {test.returncode}"]
        raise DeviceError(f"{dev.url}: the release's --self-test failed on the device: {reason[0]}")
    return uploaded


def switch(dev: Device, opts: DeployOptions, sha12: str) -> str | None:
    """Make ``sha12`` current; the release that was current before (None on a first deploy)."""
    out = dev.run(scripts.SWITCH, opts.prefix, opts.name, sha12, str(opts.keep), what="switching current")
    previous = parse_facts(out).get("previous")
    return previous if previous and previous != sha12 else None


def spec_for(binary: Binary, opts: DeployOptions) -> ServiceSpec:
    return ServiceSpec(
        name=opts.name,
        prefix=opts.prefix,
        host=opts.host,
        port=opts.port,
        ready_timeout_s=opts.ready_timeout_s,
        rss_budget_mb=binary.rss_budget_mb,
        description=binary.description,
        serve_args=opts.serve_args,
    )


def start_service(dev: Device, spec: ServiceSpec, timeout_s: float) -> str | None:
    """Restart the unit and wait for /readyz; None when ready, else why not."""
    return restart(dev, spec.unit_name, spec.host, spec.port, timeout_s)


def restart(dev: Device, unit: str, host: str, port: int | None, timeout_s: float) -> str | None:
    """Restart ``unit`` (Type=notify: systemctl returns once the binary said READY=1, or failed) and
    wait for /readyz on ``port`` (not probed when None); None when ready, else why not."""
    result = dev.transport.shell(scripts.RESTART, [unit], timeout=timeout_s + 30)
    active = parse_facts(result).get("active", "?")
    if result.returncode != 0 or active != "active":
        return f"{unit} did not start ({active}; see journalctl -u {unit} on the device)"
    return None if port is None else probe_ready(dev.transport, host, port, timeout_s)


def write_unit(dev: Device, spec: ServiceSpec, text: str | None = None) -> bool:
    """Install the unit (``text``, by default the one ``spec`` renders) atomically, daemon-reload when
    its text changed; whether it changed."""
    with tempfile.NamedTemporaryFile("w", suffix=".service", delete=False) as f:
        f.write(render(spec) if text is None else text)
    try:
        out = dev.run(
            scripts.WRITE_UNIT, spec.unit_name, spec.unit_path, stdin=Path(f.name), what="writing the unit"
        )
    finally:
        Path(f.name).unlink(missing_ok=True)
    return parse_facts(out).get("unit") != "same"


def read_unit(dev: Device, spec: ServiceSpec) -> str | None:
    """The unit's text on the device now; None when there is no unit."""
    text = dev.run(scripts.READ_UNIT, spec.unit_path, what="reading the unit").stdout
    return text or None


def release_dir(opts: DeployOptions, sha12: str) -> str:
    return f"{opts.prefix}/{opts.name}/releases/{sha12}"


def deploy_one(binary: Binary, device: str, opts: DeployOptions, echo: Echo | None) -> DeviceResult:
    start = time.monotonic()
    result = DeviceResult(device=device, outcome="failed", release=binary.sha12)
    try:
        dev = open_gateway(device, echo)
        result.device = dev.url
        preflight(dev, binary, opts)
        current = release_of(dev.facts.get("current", ""))
        spec = spec_for(binary, opts)
        old_unit = read_unit(dev, spec) if opts.service else None
        if current == binary.sha12 and dev.facts.get("have") == binary.sha256:
            if not opts.service:
                result.outcome, result.message = "unchanged", "already current"
                return result
            # Unchanged only when the unit is the same too (else the running process has other
            # arguments) and the service answers.
            if old_unit == render(spec) and probe_ready(dev.transport, spec.host, spec.port, 2.0) is None:
                result.outcome, result.message = "unchanged", "already current and ready"
                return result
            # the same release, a new unit (another port...) or not ready: restart it, no switch
            write_unit(dev, spec)
            problem = start_service(dev, spec, opts.ready_timeout_s)
            if problem is not None:
                result.message = f"already current but not ready: {problem}"
                return result
            result.outcome, result.message = "deployed", "already current; service restarted, ready"
            return result
        install(dev, binary, opts)
        switch(dev, opts, binary.sha12)
        result.previous = current if current != binary.sha12 else None
        if not opts.service:
            result.outcome, result.message = "deployed", "current switched"
            return result
        write_unit(dev, spec)
        problem = start_service(dev, spec, opts.ready_timeout_s)
        if problem is None:
            dev.run(
                scripts.SAVE_UNIT, spec.unit_path, release_dir(opts, binary.sha12), what="saving the unit"
            )
            result.outcome, result.message = "deployed", "ready"
            return result
        result.message = f"not ready: {problem}; " + undo(dev, binary, opts, spec, current, old_unit)
        result.outcome = "failed" if current is None else "rolled back"
        return result
    except EdgeBundleError as exc:
        result.message = str(exc)
        return result
    finally:
        result.seconds = round(time.monotonic() - start, 1)


def undo(
    dev: Device,
    binary: Binary,
    opts: DeployOptions,
    spec: ServiceSpec,
    current: str | None,
    old_unit: str | None,
) -> str:
    """Put the device back as the deploy found it, after the new release did not become ready: the
    release that was current (the new one forgotten), the unit as it was (its text, or none), that
    service restarted and probed. What was done, for the device's message."""
    if current != binary.sha12:
        if current is not None:
            switch(dev, opts, current)
        dev.run(scripts.FORGET, opts.prefix, opts.name, binary.sha12, what="forgetting the release")
    if old_unit is None:
        dev.run(scripts.REMOVE_UNIT, spec.unit_name, spec.unit_path, what="removing the unit")
        if current is None:
            return "nothing was deployed before: the release and its service removed"
        return f"rolled back to {current}; no service ran before: the unit removed"
    write_unit(dev, spec, old_unit)
    again = restart_and_probe(dev, opts.name, old_unit, opts.ready_timeout_s)
    back = f"rolled back to {current or 'no release'} and the unit as it was"
    return back if again is None else f"{back}, which is not ready either: {again}"


def listen_address(exec_line: str) -> tuple[str, int | None]:
    """--host and --port from the unit's ExecStart (as systemctl show prints it)."""
    host = re.search(r"--host (\S+)", exec_line)
    port = re.search(r"--port (\d+)", exec_line)
    return (host.group(1) if host else "127.0.0.1", int(port.group(1)) if port else None)


def restart_and_probe(dev: Device, name: str, exec_line: str, timeout_s: int) -> str | None:
    """``restart`` for a unit known by its ExecStart line (a restored or existing unit)."""
    host, port = listen_address(exec_line)
    return restart(dev, f"edgebundle-{name}.service", host, port, timeout_s)
