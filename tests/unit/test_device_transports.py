"""Device strings, the ssh command line, ssh's failures explained, and how each device runs a binary."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from edgebundle.device import open_transport
from edgebundle.device.local import LocalTransport
from edgebundle.device.qemu import MEASURER, QemuTransport, qemu_launch
from edgebundle.device.ssh import SSH_COMMAND_ENV, SshTransport, SshUrl, explain_ssh_failure, parse_url
from edgebundle.errors import ConfigError, DeviceError


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("ssh://pi", SshUrl(host="pi")),
        ("ssh://root@127.0.0.1:22022", SshUrl(host="127.0.0.1", user="root", port=22022)),
        ("ssh://deploy@gw-3.plant.example.com", SshUrl(host="gw-3.plant.example.com", user="deploy")),
        ("ssh://[::1]:2222", SshUrl(host="::1", port=2222)),
        ("ssh://u@host/", SshUrl(host="host", user="u")),
    ],
)
def test_ssh_urls(text: str, url: SshUrl) -> None:
    assert parse_url(text) == url
    assert str(parse_url(str(url))) == str(url)


@pytest.mark.parametrize(
    "text",
    [
        "ssh://host;touch pwned",
        "ssh://-oProxyCommand=touch pwned",
        "ssh://root@-oProxyCommand=x",
        "ssh://$(touch pwned)@host",
        "ssh://a b@host",
        "ssh://host`id`",
        "ssh://user:secret@host",
        "ssh://host:99999",
        "ssh://host:port",
        "ssh://host/path",
        "ssh://",
        "ssh://host?x=1",
    ],
)
def test_ssh_urls_that_could_inject_or_make_no_sense_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--device .*: expected ssh://\[user@\]host\[:port\]"):
        parse_url(text)


@pytest.mark.parametrize("text", ["", "locl", "ssh:host", "qemu-aarch64", "tcp://host"])
def test_unknown_devices_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ConfigError, match="expected local, qemu, or ssh://"):
        open_transport(text, echo=None)


def test_open_transport_picks_the_module() -> None:
    assert isinstance(open_transport("local", echo=None), LocalTransport)
    assert isinstance(open_transport("qemu", echo=None), QemuTransport)
    ssh = open_transport("ssh://root@h:2", echo=None)
    assert isinstance(ssh, SshTransport)
    assert ssh.device == "ssh://root@h:2"


def test_ssh_argv_puts_the_host_after_double_dash_and_honours_the_users_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = SshTransport(url=SshUrl(host="gw", user="root", port=2222), echo=None)
    monkeypatch.delenv(SSH_COMMAND_ENV, raising=False)
    argv = t.ssh_argv()
    assert argv[0] == "ssh"
    assert argv[-2:] == ["--", "gw"]
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-l") + 1] == "root"
    assert "BatchMode=yes" in argv
    monkeypatch.setenv(SSH_COMMAND_ENV, "ssh -F '/tmp/my config' -o ConnectTimeout=2")
    argv = t.ssh_argv()
    # The user's options come first, and OpenSSH keeps the first value it sees.
    assert argv[:5] == ["ssh", "-F", "/tmp/my config", "-o", "ConnectTimeout=2"]


def test_remote_command_quotes_every_argument_for_the_remote_shell() -> None:
    # What the remote login shell gets is one string; splitting it as a POSIX shell does must give
    # back exactly the words we meant, whatever they hold.
    nasty = ["/tmp/edgebundle.x", "a b;$(touch pwned)`id`'\"\n*"]
    remote = shlex.join(["sh", "-c", "echo", "sh", *nasty])
    assert shlex.split(remote) == ["sh", "-c", "echo", "sh", *nasty]


URL = SshUrl(host="gw", user="root", port=2222)


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("ssh: Could not resolve hostname gw: Name or service not known", "cannot resolve host 'gw'"),
        ("ssh: connect to host gw port 2222: Connection refused", "connection refused by gw port 2222"),
        ("ssh: connect to host gw port 2222: Connection timed out", "is unreachable"),
        ("ssh: connect to host gw port 2222: No route to host", "is unreachable"),
        ("root@gw: Permission denied (publickey).", "authentication failed as root@gw; install your key"),
        ("Host key verification failed.", "host key of gw is unknown or has changed"),
        ("Connection closed by 10.0.0.2 port 2222", "connection was lost"),
    ],
)
def test_ssh_failures_are_explained_with_the_fix(stderr: str, expected: str) -> None:
    message = explain_ssh_failure(255, stderr, URL)
    assert message is not None
    assert expected in message
    assert message.startswith("ssh://root@gw:2222: ")
    assert "\n" not in message


def test_a_remote_exit_code_is_not_an_ssh_failure() -> None:
    assert explain_ssh_failure(1, "ssh: Connection refused", URL) is None
    assert explain_ssh_failure(255, "the binary's own complaint", URL) is None


def test_native_devices_refuse_a_foreign_arch() -> None:
    t = LocalTransport(echo=None)
    assert t.launch(Path("app"), "x86_64", "x86_64").measurer is None
    assert t.launch(Path("app"), "aarch64", "arm64").prefix == ()
    with pytest.raises(
        DeviceError, match=r"app is an aarch64 binary but this host is x86_64; test it with --device qemu"
    ):
        t.launch(Path("app"), "aarch64", "x86_64")


def fake_which(found: dict[str, str]) -> Callable[[str], str | None]:
    return found.get


def test_qemu_prefers_binfmt_misc(tmp_path: Path) -> None:
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    launch = qemu_launch(
        "aarch64", tmp_path, fake_which({"qemu-aarch64-static": "/usr/bin/qemu-aarch64-static"})
    )
    assert launch.prefix == ()
    assert launch.measurer == MEASURER
    assert launch.note is not None
    assert "binfmt_misc" in launch.note


def test_qemu_falls_back_to_an_explicit_emulator(tmp_path: Path) -> None:
    (tmp_path / "qemu-aarch64").write_text("disabled\n")
    launch = qemu_launch("aarch64", tmp_path, fake_which({"qemu-aarch64": "/opt/bin/qemu-aarch64"}))
    assert launch.prefix == ("/opt/bin/qemu-aarch64",)


def test_qemu_missing_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="apt-get install qemu-user-static"):
        qemu_launch("aarch64", tmp_path, fake_which({}))


def test_qemu_runs_get_max_without_sme_unless_the_user_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``test --device qemu``: QEMU_CPU=max,sme=off (Debian 12's QEMU computes LiteRT's SME int8 kernels
    wrong, toolchains/binfmt.py), or the user's own QEMU_CPU."""
    from edgebundle.device.measurement import _open
    from edgebundle.target import host_arch

    if host_arch() == "aarch64":
        pytest.skip("an aarch64 binary runs natively here")
    binary = tmp_path / "app"
    binary.write_bytes(b"\x7fELF not ours")
    monkeypatch.delenv("QEMU_CPU", raising=False)
    transport = _open("qemu", binary, "aarch64", None)
    assert isinstance(transport, QemuTransport)
    assert transport.env is not None
    assert transport.env["QEMU_CPU"] == "max,sme=off"
    monkeypatch.setenv("QEMU_CPU", "cortex-a76")
    transport = _open("qemu", binary, "aarch64", None)
    assert transport.env is not None
    assert transport.env["QEMU_CPU"] == "cortex-a76"
