"""systemd's service notification protocol, spoken by ``--serve`` itself (no libsystemd): each message
is one datagram of ``NAME=value`` lines to the AF_UNIX socket named in ``$NOTIFY_SOCKET`` (a path, or
an abstract name written ``@name``), as ``sd_notify(3)`` sends it.

What the server sends: ``READY=1`` once the model is loaded and the self-test passed (when /readyz
turns 200), ``WATCHDOG=1`` from its event loop every half ``$WATCHDOG_USEC`` (only when
``$WATCHDOG_PID`` is unset or ours, as ``sd_watchdog_enabled(3)``), ``STOPPING=1`` when a drain
starts, and ``STATUS=`` lines along the way. The three variables are removed from the environment once
read (``unset_environment`` in sd_notify's terms), so nothing the process starts inherits them.

Sending never fails the caller: an error (no such socket, EPERM, a full queue for longer than
SEND_TIMEOUT_S) is logged once and later ones are dropped silently. Without ``$NOTIFY_SOCKET``
(not started by systemd) every call does nothing.

Imported only by ``--serve``; standard library only.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, MutableMapping
from typing import Any

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
# A send waits at most this long for room in the receiver's queue (systemd reads it at once), so that
# a stuck manager cannot hold the event loop up for long.
SEND_TIMEOUT_S = 0.5

LogFn = Callable[..., None]  # jsonlog.Log: (level, event, **fields)


def _address(name: str) -> bytes | None:
    """The socket address of ``$NOTIFY_SOCKET``: a path (absolute) or ``@abstract``; None otherwise
    (sd_notify refuses other forms too)."""
    if name.startswith("@"):
        return b"\0" + os.fsencode(name[1:])
    if name.startswith("/"):
        return os.fsencode(name)
    return None


def _watchdog_s(usec: str, pid: str) -> float | None:
    """Seconds between pings (half the watchdog timeout), or None when the watchdog is off or not
    ours."""
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        timeout = int(usec)
    except ValueError:
        return None
    if timeout <= 0:
        return None
    return timeout / 2 / 1_000_000


class Notifier:
    """The notification socket named in the environment (read once, then removed from it)."""

    def __init__(self, log: LogFn | None = None, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        name = env.pop(NOTIFY_SOCKET, "")
        usec = env.pop(WATCHDOG_USEC, "")
        pid = env.pop(WATCHDOG_PID, "")
        self._log = log
        self._complained = False
        self.socket_name = name
        self._address = _address(name) if name else None
        self._sock: socket.socket | None = None
        if name and self._address is None:
            self._complain("unsupported address (not a path or @abstract name)")
        if self._address is not None:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # close-on-exec (PEP 446)
            except OSError as exc:
                self._complain(str(exc))
            else:
                sock.settimeout(SEND_TIMEOUT_S)
                self._sock = sock
        # None: no pings (no watchdog, one meant for another process, or nowhere to send them)
        self.watchdog_s = _watchdog_s(usec, pid) if self._sock is not None and usec else None

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *assignments: str, **fields: Any) -> bool:
        """Send ``NAME=value`` lines (``"READY=1"``, ``status="..."`` as ``STATUS=...``) in one
        datagram; True when it was sent. Newlines in a value become spaces (one line each)."""
        if self._sock is None or self._address is None:
            return False
        lines = [*assignments, *(f"{name.upper()}={value}" for name, value in fields.items())]
        message = "\n".join(" ".join(str(line).splitlines()) for line in lines) + "\n"
        try:
            self._sock.sendto(message.encode("utf-8", "replace"), self._address)
        except OSError as exc:  # TimeoutError included: a full queue
            self._complain(f"{type(exc).__name__}: {exc}")
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", status=status)

    def watchdog(self) -> bool:
        """One ping; nothing when the watchdog is off or meant for another process."""
        return self.watchdog_s is not None and self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", status=status)

    def status(self, status: str) -> bool:
        return self.notify(status=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _complain(self, error: str) -> None:
        """Log the first failure; drop the later ones silently (serving goes on either way)."""
        if self._complained:
            return
        self._complained = True
        if self._log is not None:
            self._log(
                "warning",
                "notify_failed",
                socket=self.socket_name,
                error=error,
                message="systemd notifications are not delivered; later failures are not logged",
            )
