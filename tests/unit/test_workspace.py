"""Scratch directories: private, locked while in use, swept when their process is gone; and the
``edgebundle cache`` commands on a cache made of real directories, locks held by real processes."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from click.testing import CliRunner

from edgebundle import cache, workspace
from edgebundle.cli import main
from edgebundle.errors import OutputError


@pytest.fixture(autouse=True)
def private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TMPDIR and cache dir of the test's own."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("EDGEBUNDLE_CACHE_DIR", str(tmp_path / "cache"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    return tmp / f"edgebundle-build-{os.getuid()}"


def hold_lock(path: Path) -> subprocess.Popen[str]:
    """Another process holding an exclusive flock on ``path`` until its stdin closes."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    return proc


def test_scratch_is_private_and_gone_afterwards(private: Path) -> None:
    with workspace.scratch("app-1234") as workdir:
        assert workdir == private / "app-1234"
        assert oct(private.stat().st_mode & 0o777) == oct(0o700)
        (workdir / "model.tflite").write_bytes(b"x")
    assert not workdir.exists()


def test_scratch_is_removed_when_the_build_fails(private: Path) -> None:
    def refused_build() -> None:
        with workspace.scratch("app-1234") as workdir:
            (workdir / "model.tflite").write_bytes(b"x")
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        refused_build()
    assert not (private / "app-1234").exists()


def test_kept_scratch_survives_sweeps_until_cleaned(private: Path) -> None:
    with workspace.scratch("kept", keep=True) as workdir:
        pass
    with workspace.scratch("other"):
        assert workdir.is_dir()  # the sweep at the start of another build left it
    [entry] = [e for e in cache.entries(("staging",)) if e.path == workdir]
    assert entry.state == "kept"
    removed, _ = cache.clean(lambda e: True, print, kinds=("staging",))
    assert workdir in [e.path for e in removed]
    assert not workdir.exists()


def test_a_killed_builds_directory_is_swept_by_the_next_one_but_a_live_one_is_not(private: Path) -> None:
    private.mkdir(mode=0o700)
    dead = private / "dead-build"
    dead.mkdir()
    (dead / "model.tflite").write_bytes(b"left by SIGKILL")
    live = private / "live-build"
    live.mkdir()
    holder = hold_lock(private / ".live-build.lock")
    try:
        with workspace.scratch("new-build"):
            assert not dead.exists()
            assert live.is_dir()
        states = {e.path.name: e.state for e in cache.entries(("staging",))}
        assert states == {"live-build": "in use"}
    finally:
        holder.communicate("")
    assert cache.entries(("staging",))[0].state == "stale"
    code = CliRunner().invoke(main, ["cache", "clean"]).exit_code
    assert code == 0
    assert not live.exists()


@pytest.mark.parametrize("planted", ["symlink", "other-mode", "file"])
def test_a_planted_base_is_refused_never_followed(private: Path, tmp_path: Path, planted: str) -> None:
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    if planted == "symlink":
        private.symlink_to(elsewhere)
    elif planted == "other-mode":
        private.mkdir()
        private.chmod(0o777)
    else:
        private.write_text("")
    with pytest.raises(OutputError, match="another user may have planted it"), workspace.scratch("x"):
        pass
    assert list(elsewhere.iterdir()) == []


def test_a_base_owned_by_another_user_is_refused(private: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    private.mkdir(mode=0o700)
    os.chown(private, 65534, 65534)
    with pytest.raises(OutputError, match="owned by uid 65534"):
        workspace.private_tmp()


def test_cache_lists_every_kind_and_cleans_by_kind(tmp_path: Path) -> None:
    base = tmp_path / "cache"
    (base / "envs" / "tflite-runtime-pyinstaller-py3.11-abc").mkdir(parents=True)
    (base / "envs" / "tflite-runtime-pyinstaller-py3.11-abc" / "f").write_bytes(b"x" * 10000)
    (base / "runners" / ".x86_64-pyinstaller-abc.partial").mkdir(parents=True)
    (base / "runners" / "x86_64-pyinstaller-def").mkdir(parents=True)
    (base / "run" / "0123abcd").mkdir(parents=True)
    result = CliRunner().invoke(main, ["cache", "--json"])
    assert result.exit_code == 0, result.stderr
    listed = {(e["kind"], Path(e["path"]).name, e["state"]) for e in json.loads(result.stdout)}
    assert listed == {
        ("envs", "tflite-runtime-pyinstaller-py3.11-abc", "ready"),
        ("runners", ".x86_64-pyinstaller-abc.partial", "partial"),
        ("runners", "x86_64-pyinstaller-def", "ready"),
        ("runtimes", "0123abcd", "ready"),
    }
    # without a kind: only what nothing can use again
    result = CliRunner().invoke(main, ["cache", "clean"])
    assert result.stdout.strip() == "removed 1 cache entry, 0.0 MB"
    assert not (base / "runners" / ".x86_64-pyinstaller-abc.partial").exists()
    assert (base / "runners" / "x86_64-pyinstaller-def").exists()
    result = CliRunner().invoke(main, ["cache", "clean", "envs"])
    assert result.exit_code == 0
    assert not (base / "envs" / "tflite-runtime-pyinstaller-py3.11-abc").exists()
    assert (base / "runners" / "x86_64-pyinstaller-def").exists()


def test_clean_leaves_what_a_live_process_holds(tmp_path: Path) -> None:
    base = tmp_path / "cache"
    runtime = base / "run" / "0123abcd"
    runtime.mkdir(parents=True)
    runner = base / "runners" / "x86_64-pyinstaller-def"
    runner.mkdir(parents=True)
    # a binary running from its unpacked runtime holds a shared flock on the directory (launcher.c)
    fd = os.open(runtime, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    holder = hold_lock(base / "runners" / ".x86_64-pyinstaller-def.lock")  # a build making it
    try:
        result = CliRunner().invoke(main, ["cache", "clean", "--all"])
        assert result.exit_code == 0
        assert f"left {runtime}: in use" in result.stderr
        assert f"left {runner}: in use" in result.stderr
        assert runtime.is_dir()
        assert runner.is_dir()
    finally:
        os.close(fd)
        holder.communicate("")
    CliRunner().invoke(main, ["cache", "clean", "--all"])
    assert not runtime.exists()
    assert not runner.exists()


def test_cli_kinds_are_the_cache_kinds() -> None:
    command = main.commands["cache"].commands["clean"]  # type: ignore[attr-defined]
    [choice] = [p.type for p in command.params if p.name == "kinds"]
    assert tuple(choice.choices) == get_args(cache.Kind)
