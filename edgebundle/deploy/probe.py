"""Is the service on a gateway ready? ``GET /readyz`` through an SSH tunnel from this host: the gateway
needs no curl, wget or Python, only the sshd it already has (with TCP forwarding allowed, OpenSSH's
default)."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from ..device import Transport
from ..device.ssh import SshTransport
from ..errors import DeviceError
from ..proc import background

TUNNEL_START_S = 15.0
# A 200 from /readyz: the model is loaded and the self-test passed (docs/serving.md).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def tunnel(transport: Transport, host: str, port: int) -> Iterator[int]:
    """A local port forwarded to ``host:port`` as the gateway sees it, for the block's duration."""
    if not isinstance(transport, SshTransport):
        raise DeviceError(f"{transport.device}: readiness is probed over SSH; use ssh://HOST")
    local = _free_port()
    ssh = transport.ssh_argv()
    split = ssh.index("--")
    argv = [
        *ssh[:split],
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        f"127.0.0.1:{local}:{host}:{port}",
        *ssh[split:],
    ]
    with background(argv, echo=transport.echo) as proc:
        deadline = time.monotonic() + TUNNEL_START_S
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise DeviceError(
                    f"{transport.device}: the SSH tunnel to port {port} failed: {err or proc.returncode}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), timeout=1):
                break
            if time.monotonic() > deadline:
                raise DeviceError(f"{transport.device}: the SSH tunnel to port {port} did not open")
            time.sleep(0.1)
        yield local


def readyz(local_port: int) -> str | None:
    """None when /readyz answers 200, else what it answered."""
    try:
        with _OPENER.open(f"http://127.0.0.1:{local_port}/readyz", timeout=5) as answer:
            return None if answer.status == 200 else f"/readyz answered {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"/readyz answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"/readyz: {getattr(exc, 'reason', exc)}"


def probe_ready(transport: Transport, host: str, port: int, timeout_s: float) -> str | None:
    """Poll /readyz until it answers 200 (None) or ``timeout_s`` passed (what it last answered)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "", "localhost") else host
    deadline = time.monotonic() + timeout_s
    with tunnel(transport, target, port) as local:
        while True:
            problem = readyz(local)
            if problem is None:
                return None
            if time.monotonic() > deadline:
                return f"{problem} (after {timeout_s:.0f} s)"
            time.sleep(0.5)
