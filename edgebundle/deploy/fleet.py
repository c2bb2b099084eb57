"""Many gateways at once: ``deploy_fleet`` (--parallel, --canary, --max-failures), ``status_one`` and
``rollback_one`` for ``edgebundle status``/``rollback``, the summary they print."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DeviceError, EdgeBundleError
from ..proc import Echo
from . import (
    DeployOptions,
    DeviceResult,
    check_options,
    deploy_one,
    listen_address,
    open_gateway,
    parse_facts,
    read_binary,
    release_dir,
    release_of,
    restart_and_probe,
    scripts,
    switch,
)
from .probe import probe_ready
from .unit import UNIT_DIR

OnResult = Callable[[DeviceResult], None]


@dataclass
class FleetReport:
    results: list[DeviceResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "devices": [r.to_json() for r in self.results]}

    def table(self) -> str:
        width = max([len("device"), *(len(r.device) for r in self.results)])
        lines = [f"{'device':{width}}  {'outcome':11}  {'release':12}  {'previous':12}  {'s':>6}  message"]
        for r in self.results:
            lines.append(
                f"{r.device:{width}}  {r.outcome:11}  {r.release or '-':12}  {r.previous or '-':12}  "
                f"{r.seconds:6.1f}  {r.message}"
            )
        failed = sum(not r.ok for r in self.results)
        lines.append(f"{len(self.results) - failed} of {len(self.results)} devices ok")
        return "\n".join(lines)


def read_devices(args: list[str]) -> list[str]:
    """DEVICE arguments, ``@FILE`` expanded (one device per line; blank lines and # comments skipped);
    each once, in order."""
    devices: list[str] = []
    for arg in args:
        if arg.startswith("@"):
            path = Path(arg[1:])
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(f"{arg}: cannot read the device list: {exc.strerror}") from None
            found = [line.split("#", 1)[0].strip() for line in text.splitlines()]
            devices += [d for d in found if d]
        else:
            devices.append(arg)
    if not devices:
        raise ConfigError("no devices given (DEVICE... or @FILE with one ssh://HOST per line)")
    for device in devices:
        open_gateway(device, None)  # the URL's own check, before anything runs anywhere
    return list(dict.fromkeys(devices))


def deploy_fleet(
    binary_path: Path, devices: list[str], opts: DeployOptions, echo: Echo | None, on_result: OnResult
) -> FleetReport:
    """Deploy to every device, ``opts.parallel`` at a time. The first ``opts.canary`` devices go first,
    and the rest only if all of them became ready; once more than ``opts.max_failures`` devices
    failed, devices not started yet are skipped."""
    from concurrent.futures import ThreadPoolExecutor

    check_options(opts)
    binary = read_binary(binary_path)
    results: dict[str, DeviceResult] = {}
    canary, rest = devices[: opts.canary], devices[opts.canary :]
    failures = [0]
    lock = threading.Lock()

    def one(device: str) -> DeviceResult:
        with lock:
            if failures[0] > opts.max_failures:
                return DeviceResult(
                    device=device, outcome="skipped", message="more than --max-failures failed"
                )
        got = deploy_one(binary, device, opts, echo)
        with lock:
            failures[0] += not got.ok
        on_result(got)
        return got

    with ThreadPoolExecutor(max_workers=opts.parallel) as pool:
        for device, got in zip(canary, pool.map(one, canary), strict=True):
            results[device] = got
        if not all(results[d].ok for d in canary):
            for device in rest:
                results[device] = DeviceResult(device=device, outcome="skipped", message="a canary failed")
        else:
            futures = {device: pool.submit(one, device) for device in rest}
            for device, future in futures.items():
                results[device] = future.result()
    return FleetReport(results=[results[d] for d in devices])


def status_one(device: str, name: str, prefix: str, echo: Echo | None) -> dict[str, Any]:
    dev = open_gateway(device, echo)
    facts_lines = dev.run(scripts.STATUS, prefix, name, what="status").lines()
    facts = {k: v for k, _, v in (line.partition("=") for line in facts_lines) if k != "history"}
    history = [line.partition("=")[2] for line in facts_lines if line.startswith("history=")]
    current = release_of(facts.get("current", ""))
    previous = [r for r in reversed(history) if r != current]
    service = facts.get("active") or None
    ready: bool | None = None
    if service == "active":
        host, port = listen_address(facts.get("exec", ""))
        ready = port is not None and probe_ready(dev.transport, host, port, 5.0) is None
    elif service is not None:
        ready = False
    service_state = None if service is None else service if service in ("active", "failed") else "inactive"
    return {
        "device": dev.url,
        "name": name,
        "release": current,
        "previous": previous,
        "service": service_state,
        "ready": ready,
        "since": facts.get("since") or None,
        "rss_bytes": int(facts["rss_kb"]) * 1024 if facts.get("rss_kb", "").isdigit() else None,
    }


def rollback_one(device: str, opts: DeployOptions, echo: Echo | None) -> DeviceResult:
    """Make the release before the current one current again; restart and probe it if it is a service."""
    start = time.monotonic()
    result = DeviceResult(device=device, outcome="failed")
    try:
        dev = open_gateway(device, echo)
        result.device = dev.url
        found = dev.run(scripts.PREVIOUS, opts.prefix, opts.name, what="finding the previous release")
        facts = parse_facts(found)
        if not facts.get("previous"):
            raise DeviceError(f"{dev.url}: no previous release of {opts.name} to roll back to")
        result.release, result.previous = facts["previous"], facts.get("current")
        switch(dev, opts, facts["previous"])
        unit = f"edgebundle-{opts.name}.service"
        dev.run(
            scripts.RESTORE_UNIT,
            release_dir(opts, facts["previous"]),
            f"{UNIT_DIR}/{unit}",
            what="putting back the release's unit",
        )
        status = parse_facts(dev.run(scripts.STATUS, opts.prefix, opts.name, what="status"))
        if status.get("active") is not None:
            problem = restart_and_probe(dev, opts.name, status.get("exec", ""), opts.ready_timeout_s)
            if problem:
                raise DeviceError(
                    f"{dev.url}: rolled back to {result.release}, which is not ready: {problem}"
                )
        result.outcome, result.message = "restored", f"rolled back to {result.release}"
    except EdgeBundleError as exc:
        result.message = str(exc)
    result.seconds = round(time.monotonic() - start, 1)
    return result
