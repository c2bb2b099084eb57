"""Shared paths and helpers for the unit and integration tiers."""

from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
IMAGES = FIXTURES / "images"
DIGITS = FIXTURES / "digits"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load_testbeds() -> ModuleType:
    """scripts/testbeds.py (a script, not a package module) as the module ``testbeds``."""
    if "testbeds" in sys.modules:
        return sys.modules["testbeds"]
    spec = importlib.util.spec_from_file_location("testbeds", ROOT / "scripts" / "testbeds.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


class NotifyListener:
    """What systemd holds for a ``Type=notify`` service: an AF_UNIX datagram socket, at a path or an
    abstract name (``@name`` in NOTIFY_SOCKET), that receives each message with its sender's pid."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"edgebundle-test-{os.getpid()}-{secrets.token_hex(4)}"
            self.sock.bind(b"\0" + name.encode())
            self.env = "@" + name
        else:
            self.sock.bind(str(path))
            self.env = str(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def receive(self, timeout: float) -> tuple[dict[str, str], int] | None:
        """The next message as ``{NAME: value}`` and its sender's pid; None after ``timeout`` s."""
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        except TimeoutError:
            return None
        pid = -1
        for level, kind, value in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                pid = struct.unpack("3i", value[: struct.calcsize("3i")])[0]
        assert data.endswith(b"\n"), data
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        return fields, pid

    def pending(self) -> list[dict[str, str]]:
        """Every message already waiting, without waiting for more."""
        messages = []
        while (got := self.receive(0.001)) is not None:
            messages.append(got[0])
        return messages
