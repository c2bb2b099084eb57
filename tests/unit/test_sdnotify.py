"""systemd's notification protocol as ``--serve`` speaks it (runtime/sdnotify.py), against real AF_UNIX
datagram sockets bound by the test, as systemd binds its own. The server's use of it (READY=1 when
/readyz turns 200, watchdog pings from its event loop, STOPPING=1) is tested on the real binary in
tests/integration/test_serve.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebundle.runtime.sdnotify import SEND_TIMEOUT_S, Notifier
from tests.conftest import NotifyListener


class Logged:
    """A stand-in for the server's JSON log: keeps what it was given."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        self.records.append((level, event, fields))


@pytest.fixture
def listener_path(tmp_path: Path) -> Path:
    return tmp_path / "notify"  # well under AF_UNIX's 108 bytes


@pytest.fixture
def make() -> Iterator[Callable[..., Notifier]]:
    """Notifier(...), closed after the test."""
    made: list[Notifier] = []

    def notifier(*args: Any, **kwargs: Any) -> Notifier:
        made.append(Notifier(*args, **kwargs))
        return made[-1]

    yield notifier
    for notifier in made:
        notifier.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_messages_arrive_one_datagram_each_from_our_pid(
    abstract: bool, listener_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[..., Notifier]
) -> None:
    with NotifyListener(None if abstract else listener_path) as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.env)
        assert listener.env.startswith("@" if abstract else "/")
        log = Logged()
        notifier = make(log)
        assert notifier.enabled
        assert notifier.status("loading the model")
        assert notifier.ready("ready; serving on 127.0.0.1:8080")
        assert notifier.stopping("draining: 2 requests in flight")
        got = [listener.receive(5.0) for _ in range(3)]
        assert got == [
            ({"STATUS": "loading the model"}, os.getpid()),
            ({"READY": "1", "STATUS": "ready; serving on 127.0.0.1:8080"}, os.getpid()),
            ({"STOPPING": "1", "STATUS": "draining: 2 requests in flight"}, os.getpid()),
        ]
        assert listener.pending() == []
        assert log.records == []


def test_the_variables_are_removed_so_children_do_not_inherit_them(
    listener_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[..., Notifier]
) -> None:
    with NotifyListener(listener_path) as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.env)
        monkeypatch.setenv("WATCHDOG_USEC", "200000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        notifier = make()
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            assert name not in os.environ
        # Removed from the C environment too, not only from os.environ: what a child gets.
        code = "import os; print(sorted(k for k in os.environ if k in ('NOTIFY_SOCKET', 'WATCHDOG_USEC')))"
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert child.stdout.strip() == "[]"
        # Read once: the notifier still sends where the variable said.
        assert notifier.watchdog()
        assert listener.receive(5.0) == ({"WATCHDOG": "1"}, os.getpid())
        notifier.close()


def test_watchdog_every_half_timeout_only_for_our_pid(
    listener_path: Path, make: Callable[..., Notifier]
) -> None:
    with NotifyListener(listener_path) as listener:
        ours = make(environ={"NOTIFY_SOCKET": listener.env, "WATCHDOG_USEC": "200000"})
        assert ours.watchdog_s == pytest.approx(0.1)
        mine = {"NOTIFY_SOCKET": listener.env, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
        assert make(environ=mine).watchdog_s == pytest.approx(1.5)
        # Another process's watchdog (systemd set it for the main pid; we were started by it)
        theirs = make(environ={"NOTIFY_SOCKET": listener.env, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
        assert theirs.watchdog_s is None
        assert not theirs.watchdog()
        # No watchdog configured, or a value systemd would not send
        for usec in ("", "0", "-5", "abc"):
            off = make(environ={"NOTIFY_SOCKET": listener.env, "WATCHDOG_USEC": usec})
            assert off.watchdog_s is None
            assert not off.watchdog()
        assert listener.pending() == []
        assert ours.watchdog()
        assert listener.receive(5.0) == ({"WATCHDOG": "1"}, os.getpid())


def test_without_notify_socket_nothing_is_sent_or_logged(make: Callable[..., Notifier]) -> None:
    log = Logged()
    notifier = make(log, environ={"WATCHDOG_USEC": "200000"})
    assert not notifier.enabled
    assert notifier.watchdog_s is None
    assert not notifier.ready("ready")
    assert not notifier.watchdog()
    assert log.records == []


def test_a_newline_in_a_value_cannot_start_another_assignment(
    listener_path: Path, make: Callable[..., Notifier]
) -> None:
    with NotifyListener(listener_path) as listener:
        notifier = make(environ={"NOTIFY_SOCKET": listener.env})
        assert notifier.status("self-test failed: output 0 differs\nREADY=1")
        assert listener.receive(5.0) == (
            {"STATUS": "self-test failed: output 0 differs READY=1"},
            os.getpid(),
        )


def test_send_errors_are_logged_once_and_never_raised(
    listener_path: Path, make: Callable[..., Notifier]
) -> None:
    log = Logged()
    missing = make(log, environ={"NOTIFY_SOCKET": str(listener_path)})  # nobody bound it
    assert missing.enabled
    assert not missing.ready("ready")
    assert not missing.status("still nobody")
    assert [(level, event) for level, event, _ in log.records] == [("warning", "notify_failed")]
    assert "FileNotFoundError" in log.records[0][2]["error"]
    assert log.records[0][2]["socket"] == str(listener_path)

    # A socket file whose owner is gone (systemd restarted without it), and a stream socket.
    NotifyListener(listener_path).sock.close()
    gone = Logged()
    assert not make(gone, environ={"NOTIFY_SOCKET": str(listener_path)}).ready("ready")
    assert "ConnectionRefusedError" in gone.records[0][2]["error"]
    stream_path = listener_path.with_name("stream")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream:
        stream.bind(str(stream_path))
        stream.listen()
        wrong = Logged()
        assert not make(wrong, environ={"NOTIFY_SOCKET": str(stream_path)}).ready("ready")
        assert len(wrong.records) == 1

    # Forms sd_notify refuses: a relative path, a vsock address. Never sent, said once.
    for name in ("notify.sock", "vsock:2:1234"):
        odd = Logged()
        notifier = make(odd, environ={"NOTIFY_SOCKET": name})
        assert not notifier.enabled
        assert not notifier.ready("ready")
        assert [event for _, event, _ in odd.records] == ["notify_failed"]


def test_a_receiver_that_stops_reading_costs_at_most_the_send_timeout(
    listener_path: Path, make: Callable[..., Notifier]
) -> None:
    with NotifyListener(listener_path) as listener:
        log = Logged()
        notifier = make(log, environ={"NOTIFY_SOCKET": listener.env})
        sent = 0
        while True:  # fill its queue (the kernel's max_dgram_qlen messages)
            started = time.monotonic()
            if not notifier.notify("WATCHDOG=1"):
                break
            sent += 1
            assert sent < 100_000
        blocked = time.monotonic() - started
        assert sent > 0
        assert SEND_TIMEOUT_S * 0.9 <= blocked < SEND_TIMEOUT_S * 10
        assert [event for _, event, _ in log.records] == ["notify_failed"]
        assert "TimeoutError" in log.records[0][2]["error"]
        # Later failures cost the same bounded wait, and say nothing more.
        assert not notifier.notify("WATCHDOG=1")
        assert len(log.records) == 1
        assert listener.receive(5.0) == ({"WATCHDOG": "1"}, os.getpid())  # the queue is still there
