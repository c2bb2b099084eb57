"""A real device over SSH, through the system OpenSSH client, so that the user's ~/.ssh/config,
keys, agent, known_hosts and jump hosts apply as they do for ``ssh`` itself (as Ansible does it).

``EDGEBUNDLE_SSH_COMMAND`` replaces the plain ``ssh`` (like GIT_SSH_COMMAND), e.g. ``ssh -F cfg``.
Every step is one ``ssh`` run of one of the constant scripts of scripts.py; the remote command line
is ``sh -c SCRIPT sh ARG...`` with every word quoted, and user and host are checked before they reach
ssh (whose ProxyCommand and friends may paste them into a shell).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError, DeviceError, ToolMissingError
from ..proc import TIMEOUT_S, Completed, Echo, LineHandler, stream, tail
from ..target import Arch
from . import Launch
from .local import native_launch
from .scripts import Script

SSH_COMMAND_ENV = "EDGEBUNDLE_SSH_COMMAND"
CONNECT_TIMEOUT_S = 15
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")
_FORM = "ssh://[user@]host[:port]"


@dataclass(frozen=True, kw_only=True)
class SshUrl:
    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{host}{port}"


def parse_url(text: str) -> SshUrl:
    """``ssh://[user@]host[:port]``; anything that could become an option or shell text is refused."""
    bad = f"--device {text!r}: expected {_FORM}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{bad} ({exc})") from None
    if parts.scheme != "ssh" or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(bad)
    if parts.password is not None:
        raise ConfigError(f"{bad}: passwords do not go in the URL; use a key or ssh-agent")
    host = parts.hostname or ""
    bracketed = parts.netloc.rsplit("@", 1)[-1].startswith("[")
    if not (_IPV6.fullmatch(host) if bracketed else _HOST.fullmatch(host)):
        raise ConfigError(f"{bad}: {host!r} is not a host name or address")
    user = parts.username
    if user is not None and not _USER.fullmatch(user):
        raise ConfigError(f"{bad}: {user!r} is not a user name")
    if port is not None and port == 0:
        raise ConfigError(f"{bad}: port 0")
    return SshUrl(host=host, user=user, port=port)


@dataclass(frozen=True, kw_only=True)
class SshTransport:
    url: SshUrl
    echo: Echo | None

    @property
    def device(self) -> str:
        return str(self.url)

    @property
    def emulated(self) -> bool:
        return False

    def ssh_argv(self) -> list[str]:
        """ssh and its options up to ``--`` and the host (the remote command follows)."""
        base = shlex.split(os.environ.get(SSH_COMMAND_ENV, "") or "ssh")
        # Options given first win in OpenSSH, so the user's own -o (in the variable) beat ours.
        argv = [*base, "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        if self.url.port:
            argv += ["-p", str(self.url.port)]
        if self.url.user:
            argv += ["-l", self.url.user]
        return [*argv, "--", self.url.host]

    def shell(
        self,
        script: Script,
        args: Sequence[str],
        *,
        stdin: Path | None = None,
        on_line: LineHandler | None = None,
        timeout: float = TIMEOUT_S["device step"],
        detach: bool = False,
    ) -> Completed:
        remote = shlex.join(["sh", "-c", script.text, "sh", *args])
        ssh = self.ssh_argv()
        if shutil.which(ssh[0]) is None:
            raise ToolMissingError(
                f"{ssh[0]}: not found; install the OpenSSH client (Debian/Ubuntu: "
                "apt-get install openssh-client)"
            )
        result = stream(
            [*ssh, remote],
            shown=f"{shlex.join(ssh)} sh -c <{script.name}> sh {shlex.join(args)}".rstrip(),
            echo=self.echo,
            stdin=stdin,
            on_line=on_line,
            timeout=timeout,
            detach=detach,
            error=DeviceError,
        )
        problem = explain_ssh_failure(result.returncode, result.stderr, self.url)
        if problem:
            raise DeviceError(problem)
        return result

    def launch(self, binary: Path, binary_arch: Arch, machine: str) -> Launch:
        return native_launch(binary, binary_arch, machine, self.device, "--device qemu")


# OpenSSH's own failures (exit 255) by what it prints; each with what to do about it.
def explain_ssh_failure(returncode: int, stderr: str, url: SshUrl) -> str | None:
    """A one-line explanation with the fix when ssh itself failed (not the remote command)."""
    if returncode != 255:
        return None
    where = f"{url.host} port {url.port or 22}"
    login = f"{url.user + '@' if url.user else ''}{url.host}"
    port_opt = f"-p {url.port} " if url.port else ""
    text = stderr.lower()
    if "could not resolve hostname" in text or "name or service not known" in text:
        return f"{url}: cannot resolve host {url.host!r}; check the name (or its Host entry in ~/.ssh/config)"
    if "connection refused" in text:
        return (
            f"{url}: connection refused by {where}; is sshd running there and listening on that port? "
            f"(give the port as {_FORM})"
        )
    if any(s in text for s in ("timed out", "no route to host", "network is unreachable", "host is down")):
        return f"{url}: {where} is unreachable ({tail(stderr, 1)}); check the address, network and firewall"
    if "host key verification failed" in text or "remote host identification has changed" in text:
        return (
            f"{url}: the host key of {url.host} is unknown or has changed; check it and accept it once "
            f"with: ssh {port_opt}{login} true"
        )
    if "permission denied" in text or "too many authentication failures" in text:
        return (
            f"{url}: authentication failed as {login}; install your key there (ssh-copy-id {port_opt}"
            f"{login}), load it into ssh-agent, or name the right user ({_FORM})"
        )
    if "connection closed" in text or "connection reset" in text or "broken pipe" in text:
        return f"{url}: the connection was lost ({tail(stderr, 1)}); check the device and the network"
    if text.strip().startswith("ssh:") or "kex_exchange_identification" in text:
        return f"{url}: ssh failed: {tail(stderr, 1)}"
    return None
