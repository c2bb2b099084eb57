"""The scripts that run on the device, run for real by dash (Debian's /bin/sh) and by busybox sh with
nothing but busybox applets on PATH: a device needs no more than that."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgebundle.device import scripts
from edgebundle.device.local import LocalTransport
from tests.conftest import in_ci

NASTY = "a b;$(touch PWNED)`touch PWNED`'\"*?[x]\\n&|<>"


@pytest.fixture(scope="module")
def busybox_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    busybox = shutil.which("busybox")
    if busybox is None:
        reason = "busybox is not installed (scripts/ci-services.sh installs it)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    applets = tmp_path_factory.mktemp("busybox-bin")
    names = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        (applets / name).symlink_to(busybox)
    return applets


@pytest.fixture(params=["dash", "busybox"])
def device(request: pytest.FixtureRequest, tmp_path: Path) -> LocalTransport:
    """A local "device" whose TMPDIR is this test's, so that nothing lands in the real /tmp."""
    if request.param == "dash":
        env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
        return LocalTransport(echo=None, env=env)
    applets: Path = request.getfixturevalue("busybox_path")
    env = {"PATH": str(applets), "TMPDIR": str(tmp_path)}
    return LocalTransport(echo=None, shell_argv=(str(applets / "sh"),), env=env)


def setup(device: LocalTransport) -> Path:
    result = device.shell(scripts.SETUP, [])
    assert result.returncode == 0, result.stderr
    fields = dict(line.split("=", 1) for line in result.lines())
    assert fields["machine"] == os.uname().machine
    path = Path(fields["dir"])
    assert path.is_dir()
    assert path.name.startswith("edgebundle.")
    assert path.stat().st_mode & 0o777 == 0o700
    return path


def test_setup_makes_a_private_dir_under_tmpdir(device: LocalTransport, tmp_path: Path) -> None:
    assert setup(device).parent == tmp_path


def test_upload_keeps_names_with_shell_metacharacters_as_they_are(
    device: LocalTransport, tmp_path: Path
) -> None:
    d = setup(device)
    source = tmp_path / "payload"
    source.write_bytes(bytes(range(256)) * 100)
    for name in (NASTY, f"input/{NASTY}.png", "-rf"):
        result = device.shell(scripts.UPLOAD, [str(d), name], stdin=source)
        assert result.returncode == 0, result.stderr
        assert int(result.stdout.strip()) == 25600
        assert (d / name).read_bytes() == source.read_bytes()
        assert os.access(d / name, os.X_OK)
    assert not list(tmp_path.rglob("PWNED"))
    assert not Path("PWNED").exists()


def test_cold_times_the_command_and_returns_its_output(device: LocalTransport) -> None:
    d = setup(device)
    command = ["sh", "-c", 'sleep 0.3; echo "tmp=$TMPDIR cache=$EDGEBUNDLE_CACHE_DIR"; echo oops >&2; exit 3']
    result = device.shell(scripts.COLD, [str(d), *command])
    assert result.returncode == 0, result.stderr
    head, _, rest = result.stdout.partition("\n")
    word, t0, t1, code = head.split()
    assert word == "cold"
    assert code == "3"
    assert 0.25 <= float(t1) - float(t0) <= 2.0
    out, _, err = rest.partition(scripts.STDERR_MARK)
    assert f"tmp={d} cache={d}/cache" in out
    assert err.strip() == "oops"


def test_run_replaces_the_shell_inside_the_dir(device: LocalTransport) -> None:
    d = setup(device)
    script = 'pwd; echo "$TMPDIR"; echo "$EDGEBUNDLE_CACHE_DIR"; exit 5'
    result = device.shell(scripts.RUN, [str(d), "sh", "-c", script])
    assert result.returncode == 5
    assert result.lines() == [str(d), str(d), f"{d}/cache"]


def test_cleanup_ends_what_runs_in_the_dir_and_removes_it(device: LocalTransport) -> None:
    d = setup(device)
    # A leftover in a session of its own (as a measured run in its own process group would be).
    straggler = subprocess.Popen(["sleep", "60"], cwd=d, start_new_session=True)
    time.sleep(0.1)
    start = time.monotonic()
    result = device.shell(scripts.CLEANUP, [str(d)])
    assert result.returncode == 0, result.stderr
    assert straggler.wait(5) == -15  # SIGTERM, not SIGKILL: it got the chance to clean up
    assert time.monotonic() - start < 5
    assert not d.exists()
    # A second cleanup (Ctrl-C during the first) is harmless.
    assert device.shell(scripts.CLEANUP, [str(d)]).returncode == 0


@pytest.mark.parametrize("path", ["/", "/etc", "relative/edgebundle.x", "/tmp/other", ""])
def test_cleanup_refuses_what_is_not_one_of_our_dirs(device: LocalTransport, path: str) -> None:
    result = device.shell(scripts.CLEANUP, [path])
    assert result.returncode == 2
    assert "refusing to remove" in result.stderr
