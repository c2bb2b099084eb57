"""edgebundle deploy's pieces on this host: the device scripts run by a real sh (and busybox sh, as on a
minimal gateway) on a temporary prefix, the unit's text, option and device-list checks, and the
fleet's canary and failure rules. Whole deploys to booted gateways: tests/integration/test_deploy.py."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from edgebundle import deploy
from edgebundle.deploy import DeployOptions, DeviceResult, fleet, scripts
from edgebundle.deploy.unit import ServiceSpec, render
from edgebundle.device.scripts import Script
from edgebundle.errors import ConfigError
from edgebundle.proc import Completed

SHELLS = [sh for sh in (["sh"], ["busybox", "sh"]) if shutil.which(sh[0])]


def sh(shell: list[str], script: Script, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*shell, "-c", script.text, "sh", *args],
        input=stdin.decode("latin-1"),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(params=SHELLS, ids=" ".join)
def shell(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)


def install(shell: list[str], prefix: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    done = sh(shell, scripts.INSTALL, str(prefix), "app", digest, stdin=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "installed"
    return digest[:12]


def test_install_checks_the_copy_and_leaves_nothing_when_it_is_damaged(
    shell: list[str], tmp_path: Path
) -> None:
    sha12 = install(shell, tmp_path, b"#!/bin/sh\necho one\n")
    release = tmp_path / "app" / "releases" / sha12 / "app"
    assert release.read_bytes() == b"#!/bin/sh\necho one\n"
    assert release.stat().st_mode & 0o777 == 0o755
    bad = sh(shell, scripts.INSTALL, str(tmp_path), "app", "0" * 64, stdin=b"other bytes")
    assert bad.returncode == 96
    assert "transfer damaged" in bad.stderr
    assert sorted(p.name for p in (tmp_path / "app" / "releases").iterdir()) == [sha12]  # no temp left


def test_switch_history_previous_and_keep(shell: list[str], tmp_path: Path) -> None:
    app = tmp_path / "app"
    releases = []
    for i in range(3):
        releases.append(install(shell, tmp_path, f"#!/bin/sh\necho {i}\n".encode()))
        out = sh(shell, scripts.SWITCH, str(tmp_path), "app", releases[i], "3")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == (f"previous={releases[i - 1]}" if i else "")
    assert (app / "current").is_symlink()
    assert (app / "current").readlink() == Path(f"releases/{releases[2]}/app")
    prev = sh(shell, scripts.PREVIOUS, str(tmp_path), "app")
    assert prev.stdout.split() == [f"current={releases[2]}", f"previous={releases[1]}"]
    # an upload that never became current, then a fourth release with --keep 3: the oldest goes, and
    # the abandoned upload; history holds the three kept
    abandoned = install(shell, tmp_path, b"#!/bin/sh\necho never\n")
    releases.append(install(shell, tmp_path, b"#!/bin/sh\necho 3\n"))
    sh(shell, scripts.SWITCH, str(tmp_path), "app", releases[3], "3")
    assert sorted(p.name for p in (app / "releases").iterdir()) == sorted(releases[1:])
    assert abandoned not in releases
    assert (app / "history").read_text().split() == releases[1:]
    # switching back (a rollback) moves it to the end of history, nothing else is lost
    sh(shell, scripts.SWITCH, str(tmp_path), "app", releases[2], "3")
    assert (app / "history").read_text().split() == [releases[1], releases[3], releases[2]]
    assert sorted(p.name for p in (app / "releases").iterdir()) == sorted(releases[1:])
    assert not list(app.glob(".*"))  # no temporary link or history left
    missing = sh(shell, scripts.SWITCH, str(tmp_path), "app", "0123456789ab", "3")
    assert missing.returncode == 95


def test_forget_drops_a_failed_release_and_a_first_deploys_current(shell: list[str], tmp_path: Path) -> None:
    app = tmp_path / "app"
    good = install(shell, tmp_path, b"#!/bin/sh\necho good\n")
    bad = install(shell, tmp_path, b"#!/bin/sh\necho bad\n")
    for release in (good, bad, good):  # the new one failed: switched back to the good one
        sh(shell, scripts.SWITCH, str(tmp_path), "app", release, "3")
    assert sh(shell, scripts.FORGET, str(tmp_path), "app", bad).returncode == 0
    assert (app / "history").read_text().split() == [good]
    assert (app / "current").readlink() == Path(f"releases/{good}/app")
    assert sh(shell, scripts.PREVIOUS, str(tmp_path), "app").stdout.split() == [
        f"current={good}",
        "previous=",
    ]
    # a first deploy that failed: nothing current afterwards
    assert sh(shell, scripts.FORGET, str(tmp_path), "app", good).returncode == 0
    assert not (app / "current").is_symlink()
    assert (app / "history").read_text() == ""
    assert not list(app.glob(".*"))


def test_unit_read_saved_and_restored_only_when_it_differs(shell: list[str], tmp_path: Path) -> None:
    unit, release = tmp_path / "app.service", tmp_path / "release"
    release.mkdir()
    assert sh(shell, scripts.READ_UNIT, str(unit)).stdout == ""
    unit.write_text("[Service]\nExecStart=/x --port 1\n")
    assert sh(shell, scripts.READ_UNIT, str(unit)).stdout == unit.read_text()
    # no saved unit, or the same text: nothing to do (no daemon-reload)
    assert sh(shell, scripts.RESTORE_UNIT, str(release), str(unit)).returncode == 0
    assert sh(shell, scripts.SAVE_UNIT, str(unit), str(release)).returncode == 0
    assert (release / "unit.service").read_text() == unit.read_text()
    assert sh(shell, scripts.RESTORE_UNIT, str(release), str(unit)).returncode == 0
    assert sorted(p.name for p in release.iterdir()) == ["unit.service"]


def test_previous_on_a_device_with_nothing_deployed(shell: list[str], tmp_path: Path) -> None:
    out = sh(shell, scripts.PREVIOUS, str(tmp_path), "app")
    assert out.returncode == 94
    assert "nothing deployed" in out.stderr


def preflight(shell: list[str], prefix: Path, sha12: str) -> dict[str, str]:
    out = sh(shell, scripts.PREFLIGHT, str(prefix), "app", sha12)
    assert out.returncode == 0, out.stderr
    return deploy.parse_facts(Completed(returncode=0, stdout=out.stdout, stderr=""))


def test_preflight_reports_what_the_checks_need(shell: list[str], tmp_path: Path) -> None:
    sha12 = install(shell, tmp_path, b"data")
    facts = preflight(shell, tmp_path / "new" / "dir", sha12)
    assert facts["machine"]
    assert facts["kernel"]
    assert int(facts["free_kb"]) > 0  # of the nearest existing parent
    assert "current" not in facts
    assert preflight(shell, tmp_path, sha12)["have"] == hashlib.sha256(b"data").hexdigest()


def test_the_unit_is_a_hardened_notify_service() -> None:
    spec = ServiceSpec(
        name="digits",
        prefix="/opt/edgebundle",
        host="0.0.0.0",
        port=8080,
        ready_timeout_s=45,
        rss_budget_mb=80,
        description="edgebundle digits",
        serve_args=("--workers", "2"),
    )
    text = render(spec)
    lines = set(text.splitlines())
    assert "ExecStart=/opt/edgebundle/digits/current --serve --host 0.0.0.0 --port 8080 --workers 2" in lines
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "WatchdogSec=10",
        "TimeoutStartSec=45",
        "DynamicUser=yes",
        "CacheDirectory=edgebundle-digits",
        "Environment=EDGEBUNDLE_CACHE_DIR=%C/edgebundle-digits",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "MemoryMax=320M",
    ):
        assert line in lines, line
    if shutil.which("systemd-analyze"):
        unit = Path("/tmp") / f"edgebundle-test-{spec.unit_name}"
        unit.write_text(text.replace("/opt/edgebundle/digits/current", "/bin/true"))
        try:
            out = subprocess.run(
                ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
            )
            assert "Unknown key" not in out.stderr, out.stderr
            assert "Invalid" not in out.stderr, out.stderr
        finally:
            unit.unlink()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad Name"}, "--name"),
        ({"prefix": "relative"}, "--prefix"),
        ({"prefix": "/opt/../etc"}, "--prefix"),
        ({"keep": 1}, "--keep 1"),
        ({"port": 0}, "--port 0"),
        ({"ready_timeout_s": 0}, "--ready-timeout"),
    ],
)
def test_options_are_checked(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        deploy.check_options(DeployOptions(**{"name": "digits", **change}))  # type: ignore[arg-type]


def test_devices_from_arguments_and_files(tmp_path: Path) -> None:
    listed = tmp_path / "fleet.txt"
    listed.write_text("# gateways\nssh://root@gw1\n\nssh://gw2:2222  # the lab one\nssh://root@gw1\n")
    assert fleet.read_devices(["ssh://gw0", f"@{listed}"]) == [
        "ssh://gw0",
        "ssh://root@gw1",
        "ssh://gw2:2222",
    ]
    with pytest.raises(ConfigError, match="cannot read the device list"):
        fleet.read_devices([f"@{tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="ssh://"):
        fleet.read_devices(["gw1"])
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="no devices"):
        fleet.read_devices([f"@{tmp_path / 'empty'}"])


def fake_fleet(monkeypatch: pytest.MonkeyPatch, failing: set[str]) -> list[str]:
    started: list[str] = []

    def one(binary: object, device: str, opts: DeployOptions, echo: object) -> DeviceResult:
        started.append(device)
        return DeviceResult(device=device, outcome="rolled back" if device in failing else "deployed")

    monkeypatch.setattr(fleet, "deploy_one", one)
    monkeypatch.setattr(fleet, "read_binary", lambda path: None)
    return started


def test_a_failed_canary_stops_the_rollout(monkeypatch: pytest.MonkeyPatch) -> None:
    started = fake_fleet(monkeypatch, {"ssh://b"})
    devices = ["ssh://a", "ssh://b", "ssh://c", "ssh://d"]
    report = fleet.deploy_fleet(Path("x"), devices, DeployOptions(name="n", canary=2), None, lambda r: None)
    assert sorted(started) == ["ssh://a", "ssh://b"]
    assert [r.outcome for r in report.results] == ["deployed", "rolled back", "skipped", "skipped"]
    assert not report.ok


def test_the_rollout_stops_past_max_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    started = fake_fleet(monkeypatch, {"ssh://a", "ssh://b"})
    devices = ["ssh://a", "ssh://b", "ssh://c", "ssh://d"]
    report = fleet.deploy_fleet(
        Path("x"), devices, DeployOptions(name="n", parallel=1, max_failures=1), None, lambda r: None
    )
    assert started == ["ssh://a", "ssh://b"]
    assert [r.outcome for r in report.results] == ["rolled back", "rolled back", "skipped", "skipped"]
    assert report.table().splitlines()[-1] == "0 of 4 devices ok"
