"""The lean binary as a device sees it: unpacked once per runner into a cache (never per run, not even
after SIGKILL), concurrent first starts, an unusable cache directory, the model never on disk, one
process, and a rebuild with another model that reuses the cached runner. No timing assertions: the
benchmark (benchmarks/compare.py) measures time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from edgebundle.backends import bundle
from tests.conftest import MODELS
from tests.integration.conftest import CLEAN_ENV, Built, edgebundle

pytestmark = pytest.mark.build


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    for name in ("home", "tmp"):
        (tmp_path / name).mkdir(exist_ok=True)
    return {**CLEAN_ENV, "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"), **extra}


def run(binary: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, env=env, cwd=env["TMPDIR"], check=False
    )


def self_test_passes(binary: Path, env: dict[str, str]) -> None:
    proc = run(binary, env, "--self-test")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["self_test"] == "pass"


def files_under(*roots: Path) -> list[Path]:
    return [Path(d) / f for root in roots for d, _, fs in os.walk(root) for f in fs]


def test_sigkill_leaves_no_per_run_copy(digits_float: Built, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(cache))
    key = bundle.read_trailer(digits_float.path).key
    # killed while unpacking (the first start), then while running (warm starts), at several moments
    for delay in (0.005, 0.03, 0.1, 0.3, 0.6):
        proc = subprocess.Popen(
            [str(digits_float.path), "--eb-bench", "200000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=env["TMPDIR"],
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    self_test_passes(digits_float.path, env)
    assert sorted(p.name for p in (cache / "run").iterdir()) == [".lock", key]
    assert list((tmp_path / "tmp").iterdir()) == []  # no _MEIxxxxxx, nothing per run
    assert list((tmp_path / "home").iterdir()) == []
    files = len(files_under(cache))
    for _ in range(3):
        self_test_passes(digits_float.path, env)
    assert len(files_under(cache)) == files  # warm starts write nothing


def test_concurrent_first_starts_all_succeed(digits_float: Built, tmp_path: Path) -> None:
    env = env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(tmp_path / "cache"))
    procs = [
        subprocess.Popen(
            [str(digits_float.path), "--self-test"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=env["TMPDIR"],
        )
        for _ in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert json.loads(out)["self_test"] == "pass"
    key = bundle.read_trailer(digits_float.path).key
    assert sorted(p.name for p in (tmp_path / "cache" / "run").iterdir()) == [".lock", key]


def test_unwritable_cache_dir_falls_back(digits_float: Built, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(blocker / "cache"))
    env["HOME"] = str(blocker)  # ~/.cache cannot be made either
    self_test_passes(digits_float.path, env)
    fallback = tmp_path / "tmp" / f"edgebundle-{os.geteuid()}" / "run"
    assert bundle.read_trailer(digits_float.path).key in {p.name for p in fallback.iterdir()}


def test_the_model_is_never_written_to_disk(digits_float: Built, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(cache))
    self_test_passes(digits_float.path, env)
    model = digits_float.model.read_bytes()
    probe = model[len(model) // 2 : len(model) // 2 + 64]
    written = files_under(cache, tmp_path / "tmp", tmp_path / "home")
    assert len(written) > 40  # the runner is there...
    for path in written:  # ...but no file holds the model, whole or in part
        if not path.is_symlink():
            assert probe not in path.read_bytes(), path
    assert not [p for p in written if p.suffix == ".tflite" or p.name == "manifest.json"]


def test_one_process_per_run(digits_float: Built, tmp_path: Path) -> None:
    env = env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(tmp_path / "cache"))
    app = str(digits_float.path)
    proc = run(digits_float.path, env, "--eb-measure", "startup", "--runs", "2", "--", app, "--self-test")
    assert proc.returncode == 0, proc.stderr
    runs = [json.loads(line) for line in proc.stdout.splitlines()]
    # the launcher and PyInstaller's bootloader exec (never fork): one process from start to exit
    assert [r["processes"] for r in runs] == [1, 1]


def test_model_swap_reuses_the_cached_runner(digits_float: Built, tmp_path: Path) -> None:
    out = tmp_path / "digits_uint8"
    proc = edgebundle(
        "build", str(MODELS / "digits_uint8.tflite"), "--recipe", "digits", "-o", str(out), "-v"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "runner (pyinstaller): cached" in proc.stderr
    assert "+ " in proc.stderr  # -v shows the commands that ran...
    assert "-m PyInstaller" not in proc.stderr  # ...and the backend was not one of them
    first, second = bundle.read_trailer(digits_float.path), bundle.read_trailer(out)
    assert first.key == second.key
    assert first.app_offset == second.app_offset
    with open(digits_float.path, "rb") as a, open(out, "rb") as b:
        assert a.read(first.app_offset) == b.read(second.app_offset)  # byte for byte the same runner
    assert bundle.read_app_files(out)["model.tflite"] == (MODELS / "digits_uint8.tflite").read_bytes()
    self_test_passes(out, env_for(tmp_path))
