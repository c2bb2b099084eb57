"""``edgebundle test`` end to end, for real: the digits binary on this host (local), the same over SSH
to the sshd that scripts/ci-services.sh starts on 127.0.0.1, a tiny aarch64 program under QEMU, and
the device side run by busybox alone. Needs the services of scripts/ci-services.sh: without them a
developer's run skips these tests, CI (CI=true) fails them."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from edgebundle.device.local import LocalTransport
from edgebundle.device.measurement import DeviceTestPlan, run_device_test
from edgebundle.errors import BudgetExceededError, ConfigError, DeviceError
from tests.conftest import DIGITS, FIXTURES, in_ci
from tests.integration.conftest import Built

pytestmark = pytest.mark.device

DEVICE_FIXTURES = FIXTURES / "device"
CI_SSH_ENV = Path(os.environ.get("EDGEBUNDLE_CI_DIR", "/tmp/edgebundle-ci")) / "ssh.env"
NASTY = "d i'g\"its;$(touch PWNED)`touch PWNED`&|*"


def need(ok: bool, reason: str) -> None:
    """Skip for a developer without the service; fail in CI, where .ci/run must have started it."""
    if not ok:
        if in_ci():
            pytest.fail(f"{reason} (CI must provide it: bash scripts/ci-services.sh)")
        pytest.skip(f"{reason}; run: sudo bash scripts/ci-services.sh")


def edgebundle_test(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgebundle", "test", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=600,
    )


def error_line(proc: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert proc.returncode == exit_code, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("edgebundle: error: "), proc.stderr
    return last.removeprefix("edgebundle: error: ")


def device_dir(stderr: str) -> str:
    match = re.search(r"^copy to .*: [\d.]+ MB into (/\S+/edgebundle\.\w+) ", stderr, re.MULTILINE)
    assert match, stderr
    return match.group(1)


def assert_gone(path: str) -> None:
    """The device dir is removed and nothing runs in it any more (the sshd is on this host)."""
    assert not os.path.exists(path), f"{path} left behind"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        assert not cwd.startswith(path), f"process {proc.name} still runs in {cwd}"


def check_report(data: dict[str, Any], binary: Path, runs: int) -> None:
    assert data["size_bytes"] == binary.stat().st_size
    s = data["startup_ms"]
    assert 0 < s["cold"] < 60_000
    assert 0 < s["warm_p50"] <= s["warm_p90"] < 60_000
    assert data["peak_rss_bytes"] >= data["rss"]["largest_process_bytes"] > 10_000_000
    assert 0 < data["latency_ms"]["p50"] <= data["latency_ms"]["p90"]
    assert len(data["samples"]["startup_warm_ms"]) == runs
    assert len(data["samples"]["latency_ms"]) == runs
    assert data["arch"] == "x86_64"
    assert data["emulated"] is False


# --- local ------------------------------------------------------------------------------------------


@pytest.mark.build
def test_local(digits_float: Built, tmp_path: Path) -> None:
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    home = tmp_path / "home"
    proc = edgebundle_test(
        str(digits_float.path),
        *("--runs", "3", "--input", str(DIGITS / "sample_7.png")),
        *("--json-out", str(report), "--junit", str(junit)),
        env={"HOME": str(home), "XDG_CACHE_HOME": "", "EDGEBUNDLE_CACHE_DIR": ""},
    )
    assert proc.returncode == 0, proc.stderr
    # The runs unpack into the test's own dir (the cold run pays the unpacking), not the user's cache.
    assert not (home / ".cache" / "edgebundle" / "run").exists()
    data = json.loads(report.read_text())
    check_report(data, digits_float.path, 3)
    assert data["device"] == "local"
    assert data["ok"] is True
    assert data["rss"]["processes"] == 1  # the launcher execs the cached runner: one process
    assert {k: v["pass"] for k, v in data["budgets"].items()} == {
        "max_size_mb": True,
        "max_startup_ms": True,
        "max_rss_mb": True,
    }
    assert (
        data["budgets"]["max_size_mb"]["limit"] == digits_float.manifest["target"]["budgets"]["max_size_mb"]
    )
    # A line per step (runs go by as progress), then the table.
    assert re.search(r"^warm starts x3: p50 \d+ ms, peak RSS [\d.]+ MB \(", proc.stderr, re.MULTILINE)
    assert re.search(r"^inference x3: p50 ", proc.stderr, re.MULTILINE)
    assert "startup, warm" in proc.stdout
    assert proc.stdout.rstrip().endswith("ok: 3 of 3 enforced budgets pass")
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert [c.get("name") for c in suite.iter("testcase")] == ["max_size_mb", "max_startup_ms", "max_rss_mb"]
    assert_gone(device_dir(proc.stderr))


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it, from /proc/*/stat's parent pids."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text.rsplit(")", 1)[1].split()[1])
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def _vmrss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def tree_rss_sampled(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    """An independent figure: the largest SUM of VmRSS over the live process tree, sampled every
    millisecond or so from /proc/PID/status, sharing no code with the measuring mode. The tree is
    listed again every 20 ms (a scan of all of /proc takes milliseconds on a busy machine: sampling
    only after each scan missed a short run's peak)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    tree = {proc.pid}
    listed = 0.0
    while proc.poll() is None:
        if time.monotonic() - listed > 0.02:
            tree = _descendants(proc.pid)
            listed = time.monotonic()
        peak = max(peak, sum(_vmrss(pid) for pid in tree))
        time.sleep(0.001)
    return peak


@pytest.mark.build
def test_local_rss_agrees_with_independent_measurements(digits_float: Built, tmp_path: Path) -> None:
    need(os.access("/usr/bin/time", os.X_OK), "GNU time (/usr/bin/time) is not installed")
    report = tmp_path / "r.json"
    proc = edgebundle_test(str(digits_float.path), "--runs", "3", "--json-out", str(report))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    tree, largest = data["peak_rss_bytes"], data["rss"]["largest_process_bytes"]

    # /usr/bin/time -v: ru_maxrss, the largest single process (the only one: the launcher execs), of
    # a warm run as edgebundle test's are (a first run's peak is the launcher's while it unpacks).
    env = {**os.environ, "HOME": str(tmp_path)}
    subprocess.run(
        [str(digits_float.path), "--self-test"], cwd=tmp_path, env=env, capture_output=True, check=True
    )
    timed = subprocess.run(
        ["/usr/bin/time", "-v", str(digits_float.path), "--self-test"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.stderr)
    assert match, timed.stderr
    gnu_time = int(match.group(1)) * 1024
    assert abs(largest - gnu_time) <= 0.10 * gnu_time
    # Separate runs differ by a few pages, so the tree figure may even come out a hair below it.
    assert abs(tree - gnu_time) <= 0.10 * gnu_time

    # The whole tree, sampled independently: the peak of the sum of current RSS.
    argv = [str(digits_float.path), "--self-test"]
    sampled = max(tree_rss_sampled(argv, tmp_path, env) for _ in range(3))
    assert abs(tree - sampled) <= 0.10 * sampled


@pytest.mark.build
def test_a_failed_budget_exits_7_and_still_writes_the_reports(digits_float: Built, tmp_path: Path) -> None:
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    proc = edgebundle_test(
        str(digits_float.path),
        *("--runs", "1", "--target", str(DEVICE_FIXTURES / "tiny-budgets.toml")),
        *("--json-out", str(report), "--junit", str(junit)),
    )
    message = error_line(proc, BudgetExceededError.exit_code)
    assert message.startswith("3 budget(s) exceeded on local: max_size_mb: ")
    assert "max_startup_ms: " in message
    assert "max_rss_mb: " in message
    assert json.loads(report.read_text())["ok"] is False
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "3"
    assert "FAILED: " in proc.stdout


@pytest.fixture(scope="module")
def busybox_applets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    busybox = shutil.which("busybox")
    need(busybox is not None, "busybox is not installed")
    assert busybox is not None
    applets = tmp_path_factory.mktemp("busybox-bin")
    names = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        (applets / name).symlink_to(busybox)
    return applets


@pytest.mark.build
def test_a_device_with_only_busybox_is_enough(
    digits_float: Built, busybox_applets: Path, tmp_path: Path
) -> None:
    # The device side, run by busybox sh with nothing but busybox applets on PATH and no Python.
    device = LocalTransport(
        echo=None,
        shell_argv=(str(busybox_applets / "sh"),),
        env={"PATH": str(busybox_applets), "TMPDIR": str(tmp_path)},
    )
    lines: list[str] = []
    report = run_device_test(
        DeviceTestPlan(binary=digits_float.path, runs=2), echo=None, progress=lines.append, transport=device
    )
    assert report.ok
    assert report.processes == 1
    assert report.size_bytes == digits_float.path.stat().st_size
    assert "startup 2/2" in " ".join(lines)
    assert list(tmp_path.iterdir()) == []  # the device dir is gone


# --- QEMU -------------------------------------------------------------------------------------------


def have_qemu(arch: str) -> bool:
    entry = Path(f"/proc/sys/fs/binfmt_misc/qemu-{arch}")
    registered = entry.exists() and entry.read_text().startswith("enabled")
    return registered or bool(shutil.which(f"qemu-{arch}-static") or shutil.which(f"qemu-{arch}"))


@pytest.mark.parametrize("arch", ["aarch64"])
def test_qemu(arch: str, tmp_path: Path) -> None:
    need(have_qemu(arch), f"QEMU user-mode emulation for {arch} is not installed")
    binary = DEVICE_FIXTURES / f"fake_app-{arch}"
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    proc = edgebundle_test(
        str(binary), "--device", "qemu", "--runs", "3", "--json-out", str(report), "--junit", str(junit)
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert (data["device"], data["arch"], data["emulated"], data["ok"]) == ("qemu", arch, True, True)
    assert data["size_bytes"] == binary.stat().st_size
    assert data["startup_ms"]["warm_p50"] > 0
    assert data["peak_rss_bytes"] > 8 << 20  # the program touches 8 MiB (QEMU's own memory on top)
    assert data["latency_ms"]["p50"] > 0
    assert {k: v["pass"] for k, v in data["budgets"].items()} == {
        "max_size_mb": True,
        "max_startup_ms": None,
        "max_rss_mb": None,
    }
    assert any("not representative" in note for note in data["notes"])
    assert "not representative" in proc.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("skipped") == "2"
    assert_gone(device_dir(proc.stderr))


# --- SSH --------------------------------------------------------------------------------------------


def ssh_settings() -> dict[str, str]:
    """EDGEBUNDLE_TEST_SSH and EDGEBUNDLE_SSH_COMMAND from the environment or ci-services.sh's file."""
    settings = {
        k: os.environ[k] for k in ("EDGEBUNDLE_TEST_SSH", "EDGEBUNDLE_SSH_COMMAND") if k in os.environ
    }
    if "EDGEBUNDLE_TEST_SSH" not in settings and CI_SSH_ENV.is_file():
        for line in CI_SSH_ENV.read_text().splitlines():
            for word in shlex.split(line, comments=True):
                key, _, value = word.partition("=")
                settings.setdefault(key, value)
    return settings


@pytest.fixture(scope="module")
def ssh_device() -> tuple[str, dict[str, str]]:
    settings = ssh_settings()
    need("EDGEBUNDLE_TEST_SSH" in settings, f"no test sshd: EDGEBUNDLE_TEST_SSH unset and no {CI_SSH_ENV}")
    need(shutil.which("ssh") is not None, "the OpenSSH client is not installed")
    url = settings["EDGEBUNDLE_TEST_SSH"]
    env = {k: v for k, v in settings.items() if k != "EDGEBUNDLE_TEST_SSH"}
    probe = subprocess.run(
        [*shlex.split(env.get("EDGEBUNDLE_SSH_COMMAND", "ssh")), "-o", "BatchMode=yes", url, "true"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )
    need(probe.returncode == 0, f"the test sshd at {url} does not answer: {probe.stderr.strip()}")
    return url, env


@pytest.mark.build
def test_ssh(digits_float: Built, ssh_device: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = ssh_device
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    proc = edgebundle_test(
        str(digits_float.path),
        *("--device", url, "--runs", "3", "--json-out", str(report), "--junit", str(junit), "-v"),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    check_report(data, digits_float.path, 3)
    assert data["device"] == url
    assert data["ok"] is True
    assert data["rss"]["processes"] == 1
    assert "+ ssh " in proc.stderr
    assert_gone(device_dir(proc.stderr))


@pytest.mark.build
def test_ssh_file_names_cannot_inject_commands(
    digits_float: Built, ssh_device: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = ssh_device
    weird = tmp_path / NASTY
    weird.mkdir()
    binary, image = weird / NASTY, weird / f"{NASTY}.png"
    shutil.copy(digits_float.path, binary)
    shutil.copy(DIGITS / "sample_3.png", image)
    proc = edgebundle_test(str(binary), "--device", url, "--runs", "1", "--input", str(image), env=env)
    assert proc.returncode == 0, proc.stderr
    assert NASTY in proc.stdout
    for place in (Path.home(), Path.cwd(), tmp_path, Path("/tmp"), Path("/")):
        assert not (place / "PWNED").exists(), place
    assert_gone(device_dir(proc.stderr))


@pytest.mark.build
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ssh_interrupted_cleans_up_the_device(
    digits_float: Built, ssh_device: tuple[str, dict[str, str]], sig: signal.Signals
) -> None:
    url, env = ssh_device
    binary = str(digits_float.path)
    proc = subprocess.Popen(
        # -v: every run's line as it comes
        [sys.executable, "-m", "edgebundle", "test", binary, "--device", url, "--runs", "50", "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("startup 2/"):
            break
    else:
        pytest.fail("".join(seen))
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the whole foreground group, ssh included
    else:
        proc.send_signal(sig)  # a cancelled CI job: edgebundle alone
    rest = proc.stderr.read()
    assert proc.wait(60) == 130, rest
    assert "edgebundle: interrupted" in rest
    assert "<cleanup>" in rest
    assert_gone(device_dir("".join(seen)))


@pytest.mark.build
def test_qemu_on_a_native_binary_measures_it_directly_and_says_so(
    digits_float: Built, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    proc = edgebundle_test(
        str(digits_float.path), "--device", "qemu", "--runs", "2", "--json-out", str(report)
    )
    assert proc.returncode == 0, proc.stderr
    machine = platform.machine()
    assert f"{digits_float.path} is a native {machine} binary: measured directly on this host" in proc.stderr
    data = json.loads(report.read_text())
    assert (data["device"], data["arch"], data["emulated"], data["ok"]) == ("local", machine, False, True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ssh_errors_are_one_line_with_the_fix(ssh_device: tuple[str, dict[str, str]]) -> None:
    url, env = ssh_device
    binary = str(DEVICE_FIXTURES / "fake_app-x86_64")
    host_port = url.removeprefix("ssh://").split("@")[-1]
    port = free_port()
    cases = [
        (
            f"ssh://root@127.0.0.1:{port}",
            f"connection refused by 127.0.0.1 port {port}; is sshd running there",
        ),
        (f"ssh://nobody@{host_port}", "authentication failed as nobody@127.0.0.1; install your key there"),
        ("ssh://no-such-host.invalid", "cannot resolve host 'no-such-host.invalid'"),
    ]
    for device, expected in cases:
        proc = edgebundle_test(binary, "--device", device, env=env)
        message = error_line(proc, DeviceError.exit_code)
        assert message.startswith(f"{device}: "), message
        assert expected in message


def test_an_unreachable_host_says_what_to_check(tmp_path: Path) -> None:
    # A network namespace with no network: every address is unreachable, whatever the machine's own
    # network (or a sandbox's) would do with a packet to it.
    need(
        subprocess.run(["unshare", "--net", "true"], check=False).returncode == 0,
        "unshare --net is not allowed",
    )
    binary = str(DEVICE_FIXTURES / "fake_app-x86_64")
    proc = subprocess.run(
        [
            "unshare",
            "--net",
            sys.executable,
            "-m",
            "edgebundle",
            "test",
            binary,
            "--device",
            "ssh://root@10.1.2.3",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )
    message = error_line(proc, DeviceError.exit_code)
    assert message.startswith("ssh://root@10.1.2.3: 10.1.2.3 port 22 is unreachable (")
    assert message.endswith("); check the address, network and firewall")


def test_a_device_string_that_tries_to_inject_is_refused(tmp_path: Path) -> None:
    proc = edgebundle_test(
        str(DEVICE_FIXTURES / "fake_app-x86_64"), "--device", f"ssh://root@127.0.0.1;touch {tmp_path}/PWNED"
    )
    assert "expected ssh://[user@]host[:port]" in error_line(proc, ConfigError.exit_code)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.build
def test_several_devices_at_once_with_one_report(
    digits_float: Built, ssh_device: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """Two devices measured in parallel: one combined JSON and one JUnit file (a suite per device);
    a device that cannot be reached fails alone (exit 8), the others are still measured."""
    url, env = ssh_device
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    proc = edgebundle_test(
        str(digits_float.path),
        *("-d", "local", "-d", url, "--runs", "2", "--json-out", str(report), "--junit", str(junit)),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert data["ok"] is True
    assert data["errors"] == []
    assert [d["device"] for d in data["devices"]] == ["local", url]
    for one in data["devices"]:
        check_report(one, digits_float.path, 2)
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.find("properties/property[@name='device']").get("value") for s in suites] == ["local", url]  # type: ignore[union-attr]

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"ssh://root@127.0.0.1:{s.getsockname()[1]}"
    proc = edgebundle_test(
        str(digits_float.path), "-d", "local", "-d", closed, "--runs", "2", "--json", env=env
    )
    assert error_line(proc, DeviceError.exit_code).startswith(f"{closed}: ")
    data = json.loads(proc.stdout)
    assert [d["device"] for d in data["devices"]] == ["local"]
    assert data["ok"] is False
    assert len(data["errors"]) == 1
