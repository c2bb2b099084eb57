"""``edgebundle deploy``, ``status``, ``rollback`` and ``package`` against real gateways: Debian bookworm
roots booted with systemd as PID 1 by systemd-nspawn (``scripts/testbeds.py up``), one x86_64 and one
arm64 (aarch64 systemd and sshd under QEMU through binfmt_misc), reached over SSH on 127.0.0.1 with
the client key of scripts/ci-services.sh. They have no Python and no curl. The containers share the
host's network: each gateway's sshd and each service has a port of its own, and the host talks HTTP
to a service directly.

The tests run in file order and build on each other (one deploy history per gateway), as an operator
would: deploy to both gateways at once, the same release again, a killed service, a wrong-arch binary,
an upgrade, a rollback, a release that cannot bind its port, a canary, and the .deb.

Needs root (mmdebstrap, mounts, systemd-nspawn), systemd-container, the sshd client key and the tmpfs
at /run/systemd/nspawn of scripts/ci-services.sh, and for arm64 qemu-aarch64 registered with
binfmt_misc. Under CI=true a missing piece fails.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgebundle.target import host_arch
from tests.conftest import DIGITS, MODELS, ROOT, in_ci, load_testbeds
from tests.integration.conftest import edgebundle

pytestmark = [pytest.mark.device, pytest.mark.build]

testbeds = load_testbeds()
SEVEN = DIGITS / "sample_7.png"
NAME = "digits"
ARM_READY_S = "240"  # unpacking the runtime and loading the model under QEMU, on a busy host
EXIT_DEVICE = 8
DEPLOY = [sys.executable, "-m", "edgebundle", "deploy", "--name", NAME, "--service", "--json"]
UP = [sys.executable, str(ROOT / "scripts" / "testbeds.py"), "up"]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _missing(arm64: bool) -> str | None:
    if os.geteuid() != 0:
        return "the gateways need root (mmdebstrap, mounts, systemd-nspawn)"
    for tool in ("mmdebstrap", "systemd-nspawn", "unshare", "ssh", "ssh-keygen", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (bash scripts/ci-services.sh installs it)"
    if not testbeds.CI_KEY.is_file():
        return f"{testbeds.CI_KEY}: no client key (bash scripts/ci-services.sh makes it)"
    if not os.path.ismount(testbeds.NSPAWN_RUNTIME) and not Path("/run/systemd/system").is_dir():
        return f"{testbeds.NSPAWN_RUNTIME} is not mounted (bash scripts/ci-services.sh mounts a tmpfs)"
    if arm64:
        if host_arch() != "x86_64":
            return "the arm64 gateway is tested from an x86_64 host"
        if shutil.which("arch-test") is None:
            return "arch-test not installed (bash scripts/setup.sh installs it)"
        if not testbeds.binfmt_enabled("arm64"):
            return "qemu-aarch64 is not registered with binfmt_misc (bash scripts/ci-services.sh)"
    return None


def _need(arm64: bool) -> None:
    reason = _missing(arm64)
    if reason is not None:
        if in_ci():
            pytest.fail(f"gateway tests cannot run: {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Gateway:
    name: str
    arch: str
    url: str
    ssh_port: int
    service_port: int

    def ssh_argv(self, command: str) -> list[str]:
        ssh = shlex.split(os.environ["EDGEBUNDLE_SSH_COMMAND"])
        return [*ssh, "-p", str(self.ssh_port), "root@127.0.0.1", command]

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.ssh_argv(command),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def main_pid(self, unit: str = f"edgebundle-{NAME}.service") -> int:
        out = self.ssh(f"systemctl show -p MainPID --value {unit}")
        return int(out.stdout.strip() or 0)


@dataclass(frozen=True)
class Binaries:
    x86: Path  # release A for x86_64 (float model)
    x86_b: Path  # release B for x86_64 (int8 model): the upgrade, then the rollback
    arm: Path  # release A for arm64


def _build(out: Path, model: str, *extra: str) -> Path:
    proc = edgebundle("build", str(MODELS / model), "--recipe", "digits", *extra, "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Binaries:
    _need(arm64=True)
    out = tmp_path_factory.mktemp("gateway-binaries")
    start = time.monotonic()
    built = Binaries(
        x86=_build(out / "digits-x86_64", "digits_float.tflite"),
        x86_b=_build(out / "digits-int8-x86_64", "digits_int8.tflite"),
        arm=_build(out / "digits-arm64", "digits_float.tflite", "--target", "arm64"),
    )
    print(f"\ngateway binaries built in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return built


@pytest.fixture(scope="module")
def gateways() -> Iterator[dict[str, Gateway]]:
    """An x86_64 and an arm64 gateway, booted in parallel for this module's tests, stopped after them.
    EDGEBUNDLE_SSH_COMMAND names the gateways' ssh_config meanwhile only: other modules' tests (the
    test sshd of tests/integration/test_device_e2e.py) need their own."""
    _need(arm64=True)
    wanted = {"x86": ("eb-test-x86", "amd64"), "arm": ("eb-test-arm", "arm64")}
    ports = {key: free_port() for key in wanted}
    start = time.monotonic()
    procs = {
        key: subprocess.Popen(
            [*UP, name, "--arch", arch, "--ssh-port", str(ports[key]), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for key, (name, arch) in wanted.items()
    }
    infos: dict[str, dict[str, Any]] = {}
    try:
        for key, proc in procs.items():
            out, err = proc.communicate(
                timeout=testbeds.MMDEBSTRAP_TIMEOUT_S + testbeds.GATEWAY_BOOT_TIMEOUT_S
            )
            assert proc.returncode == 0, f"gateway {wanted[key][0]} did not come up: {err[-2000:]}"
            infos[key] = json.loads(out)
        print(f"\ngateways up in {time.monotonic() - start:.0f} s", file=sys.stderr)
        saved = os.environ.get("EDGEBUNDLE_SSH_COMMAND")
        os.environ["EDGEBUNDLE_SSH_COMMAND"] = str(infos["x86"]["ssh_command"])
        try:
            yield {
                key: Gateway(
                    name=wanted[key][0],
                    arch=wanted[key][1],
                    url=str(info["url"]),
                    ssh_port=int(info["ssh_port"]),
                    service_port=free_port(),
                )
                for key, info in infos.items()
            }
        finally:
            if saved is None:
                os.environ.pop("EDGEBUNDLE_SSH_COMMAND", None)
            else:
                os.environ["EDGEBUNDLE_SSH_COMMAND"] = saved
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for name, _ in wanted.values():
            testbeds.gateway_down(name)


def http(port: int, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET"
    )
    try:
        with _OPENER.open(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def assert_serving(port: int) -> None:
    status, body = http(port, "/readyz")
    assert status == 200, body
    status, body = http(port, "/v1/infer", SEVEN.read_bytes())
    assert status == 200, body
    assert json.loads(body)["top_k"][0]["label"] == "seven"


def deploy(binary: Path, *devices: str, port: int, name: str = NAME, extra: tuple[str, ...] = ()) -> Any:
    proc = edgebundle(
        "deploy", str(binary), *devices, "--name", name, "--service", "--port", str(port), "--json", *extra
    )
    return proc


def status(gw: Gateway, name: str = NAME) -> dict[str, Any]:
    proc = edgebundle("status", gw.url, "--name", name, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


def sha12(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def outcomes(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    report = json.loads(proc.stdout)
    return {d["device"]: d for d in report["devices"]}


def test_deploy_to_an_x86_64_and_an_arm64_gateway_at_once(
    binaries: Binaries, gateways: dict[str, Gateway]
) -> None:
    x86, arm = gateways["x86"], gateways["arm"]
    start = time.monotonic()
    runs = [
        (x86, binaries.x86, ()),
        (arm, binaries.arm, ("--ready-timeout", ARM_READY_S)),
    ]
    procs = [
        subprocess.Popen(
            [*DEPLOY, str(binary), gw.url, "--port", str(gw.service_port), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for gw, binary, extra in runs
    ]
    for (_, binary, _), proc in zip(runs, procs, strict=True):
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
        got = json.loads(out)["devices"][0]
        assert got["outcome"] == "deployed", got
        assert got["release"] == sha12(binary)
    print(f"\ndeployed to both gateways in {time.monotonic() - start:.0f} s", file=sys.stderr)
    for gw, binary, _ in runs:
        row = status(gw)
        assert row["release"] == sha12(binary)
        assert row["service"] == "active"
        assert row["ready"] is True
        assert row["rss_bytes"] > 10_000_000
        assert_serving(gw.service_port)
    # The hardening of the unit holds in the gateway: a dynamic user, nothing writable but the cache.
    show = x86.ssh(f"systemctl show -p User,DynamicUser,ProtectSystem edgebundle-{NAME}.service").stdout
    assert "DynamicUser=yes" in show
    assert "ProtectSystem=strict" in show
    uid = int(x86.ssh(f"stat -c %u /proc/{x86.main_pid()}").stdout)
    assert 61184 <= uid <= 65519  # systemd's range of dynamic users: not root
    assert x86.ssh(f"test -d /var/cache/private/edgebundle-{NAME}").returncode == 0


def test_the_same_release_again_is_unchanged(binaries: Binaries, gateways: dict[str, Gateway]) -> None:
    x86 = gateways["x86"]
    pid = x86.main_pid()
    proc = deploy(binaries.x86, x86.url, port=x86.service_port)
    assert proc.returncode == 0, proc.stderr
    assert outcomes(proc)[x86.url]["outcome"] == "unchanged"
    assert x86.main_pid() == pid  # nothing restarted


def test_a_killed_service_is_restarted_by_systemd(gateways: dict[str, Gateway]) -> None:
    x86 = gateways["x86"]
    pid = x86.main_pid()
    # A crash, as the kernel's OOM killer or a segfault ends it (`systemctl kill` reports an error for
    # the cgroup v1 hierarchy of a container on this kind of host, though the process dies).
    assert x86.ssh(f"kill -KILL {pid}").returncode == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = x86.main_pid()
        if (
            now not in (0, pid)
            and x86.ssh(f"systemctl is-active edgebundle-{NAME}").stdout.strip() == "active"
        ):
            break
        time.sleep(0.5)
    else:
        pytest.fail("the killed service was not restarted within 60 s")
    assert int(x86.ssh(f"systemctl show -p NRestarts --value edgebundle-{NAME}").stdout) >= 1
    assert_serving(x86.service_port)
    assert status(x86)["ready"] is True


def test_a_wrong_arch_binary_is_refused_before_anything_changes(
    binaries: Binaries, gateways: dict[str, Gateway]
) -> None:
    x86 = gateways["x86"]
    pid = x86.main_pid()
    proc = deploy(binaries.arm, x86.url, port=x86.service_port)
    assert proc.returncode == EXIT_DEVICE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in (x86.url, "aarch64", "x86_64"):
        assert word in lines[0], lines[0]
    got = outcomes(proc)[x86.url]
    assert got["outcome"] == "failed"
    row = status(x86)
    assert row["release"] == sha12(binaries.x86)
    assert row["ready"] is True
    assert x86.main_pid() == pid
    assert x86.ssh(f"ls /opt/edgebundle/{NAME}/releases").stdout.split() == [sha12(binaries.x86)]
    assert_serving(x86.service_port)


def test_an_upgrade_then_rollback(binaries: Binaries, gateways: dict[str, Gateway]) -> None:
    x86 = gateways["x86"]
    a, b = sha12(binaries.x86), sha12(binaries.x86_b)
    proc = deploy(binaries.x86_b, x86.url, port=x86.service_port)
    assert proc.returncode == 0, proc.stderr
    got = outcomes(proc)[x86.url]
    assert (got["outcome"], got["release"], got["previous"]) == ("deployed", b, a)
    row = status(x86)
    assert (row["release"], row["previous"], row["ready"]) == (b, [a], True)
    assert_serving(x86.service_port)

    proc = edgebundle("rollback", x86.url, "--name", NAME, "--json")
    assert proc.returncode == 0, proc.stderr
    got = outcomes(proc)[x86.url]
    assert (got["outcome"], got["release"], got["previous"]) == ("restored", a, b)
    row = status(x86)
    assert (row["release"], row["previous"], row["ready"]) == (a, [b], True)
    assert_serving(x86.service_port)


def test_a_release_that_cannot_bind_its_port_is_rolled_back(
    binaries: Binaries, gateways: dict[str, Gateway]
) -> None:
    """The new release asks for a port another service holds: it never becomes ready, and the device
    is put back as it was: the previous release current, with its own unit (its own port), serving."""
    x86 = gateways["x86"]
    a, b = sha12(binaries.x86), sha12(binaries.x86_b)
    other, other_port = "digits-two", free_port()
    first = deploy(binaries.x86_b, x86.url, name=other, port=other_port)
    assert first.returncode == 0, first.stderr
    pid = x86.main_pid(f"edgebundle-{other}.service")

    taken = deploy(binaries.x86, x86.url, name=other, port=x86.service_port, extra=("--ready-timeout", "20"))
    assert taken.returncode == EXIT_DEVICE, taken.stderr
    got = outcomes(taken)[x86.url]
    assert got["outcome"] == "rolled back", got
    assert f"rolled back to {b}" in got["message"], got
    row = status(x86, other)
    assert (row["release"], row["service"], row["ready"]) == (b, "active", True)
    assert row["previous"] == []  # the release that failed is not offered for a rollback
    assert x86.main_pid(f"edgebundle-{other}.service") != pid
    assert_serving(other_port)
    assert_serving(x86.service_port)  # the first service was never disturbed
    assert status(x86)["release"] == a

    # A first deploy that fails leaves nothing behind: no current release, no unit.
    third = "digits-three"
    failed = deploy(binaries.x86, x86.url, name=third, port=other_port, extra=("--ready-timeout", "20"))
    assert failed.returncode == EXIT_DEVICE
    assert outcomes(failed)[x86.url]["outcome"] == "failed"
    row = status(x86, third)
    assert (row["release"], row["service"]) == (None, None)
    assert x86.ssh(f"test -e /etc/systemd/system/edgebundle-{third}.service").returncode != 0


def test_a_failed_canary_stops_the_rollout(binaries: Binaries, gateways: dict[str, Gateway]) -> None:
    x86, arm = gateways["x86"], gateways["arm"]
    before = status(arm)
    proc = deploy(binaries.arm, x86.url, arm.url, port=arm.service_port, extra=("--canary", "1"))
    assert proc.returncode == EXIT_DEVICE
    got = outcomes(proc)
    assert got[x86.url]["outcome"] == "failed"
    assert (got[arm.url]["outcome"], got[arm.url]["message"]) == ("skipped", "a canary failed")
    assert status(arm)["release"] == before["release"]
    assert status(x86)["release"] == sha12(binaries.x86)


def test_the_deb_installs_starts_and_removes_the_service(
    binaries: Binaries, gateways: dict[str, Gateway], tmp_path: Path
) -> None:
    x86 = gateways["x86"]
    port = free_port()
    made = edgebundle(
        "package",
        str(binaries.x86),
        "--name",
        "digits-deb",
        "--service",
        "--port",
        str(port),
        "-o",
        str(tmp_path),
    )
    assert made.returncode == 0, made.stderr
    (deb,) = tmp_path.glob("edgebundle-digits-deb_*_amd64.deb")
    with open(deb, "rb") as data:
        copied = subprocess.run(
            x86.ssh_argv("cat > /tmp/digits.deb"),
            stdin=data,
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert copied.returncode == 0, copied.stderr
    installed = x86.ssh("dpkg -i /tmp/digits.deb", timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert x86.ssh("systemctl is-active edgebundle-digits-deb").stdout.strip() == "active"
    assert_serving(port)
    row = status(x86, "digits-deb")
    assert (row["release"], row["ready"]) == (sha12(binaries.x86), True)

    removed = x86.ssh("dpkg -r edgebundle-digits-deb", timeout=120)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert x86.ssh("systemctl is-active edgebundle-digits-deb").stdout.strip() in ("inactive", "unknown")
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        http(port, "/readyz")
    assert x86.ssh("test -e /opt/edgebundle/digits-deb/current").returncode != 0
