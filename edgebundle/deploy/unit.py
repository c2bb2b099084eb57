"""The systemd unit a deploy writes for ``--service``: the binary's --serve as a notify service.

Type=notify: the binary sends READY=1 once its model is loaded and its self-test passed (when /readyz
turns 200), so ``systemctl restart`` returns only then, or fails; WatchdogSec: the serving loop
pings, and a wedged loop is restarted. Hardening: a dynamic user, nothing writable but the runtime
cache (CacheDirectory=, where the launcher unpacks the runtime), no new privileges, a private /tmp,
the memory the target budgets for.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

UNIT_DIR = "/etc/systemd/system"
WATCHDOG_S = 10
# What --serve holds beyond a --self-test's peak (connection buffers, worker threads, decode budget):
# MemoryMax is the target's RSS budget times this, at least MIN_MEMORY_MB.
MEMORY_FACTOR = 4
MIN_MEMORY_MB = 256


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    name: str
    prefix: str
    host: str
    port: int
    ready_timeout_s: int
    rss_budget_mb: float | None
    description: str
    serve_args: tuple[str, ...] = ()

    @property
    def unit_name(self) -> str:
        return f"edgebundle-{self.name}.service"

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/{self.unit_name}"

    @property
    def cache_dir(self) -> str:
        return f"edgebundle-{self.name}"

    @property
    def memory_max_mb(self) -> int:
        budget = self.rss_budget_mb or 0
        return max(MIN_MEMORY_MB, int(budget * MEMORY_FACTOR))

    def exec_start(self) -> list[str]:
        return [
            f"{self.prefix}/{self.name}/current",
            "--serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.serve_args,
        ]


def render(spec: ServiceSpec) -> str:
    """The unit file's text (systemd quoting: each argument of ExecStart quoted as a shell would)."""
    exec_start = " ".join(shlex.quote(arg) for arg in spec.exec_start())
    return f"""\
# Written by edgebundle deploy; edgebundle deploy --service rewrites it.
[Unit]
Description={spec.description}
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
Environment=EDGEBUNDLE_CACHE_DIR=%C/{spec.cache_dir}
Restart=on-failure
RestartSec=2
TimeoutStartSec={spec.ready_timeout_s}
TimeoutStopSec=30
WatchdogSec={WATCHDOG_S}
DynamicUser=yes
CacheDirectory={spec.cache_dir}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
LockPersonality=yes
MemoryMax={spec.memory_max_mb}M

[Install]
WantedBy=multi-user.target
"""
