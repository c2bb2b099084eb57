"""The unpacked runtime in the cache, damaged the way tmp cleaners and people do it (a file deleted or
truncated, everything in it deleted): the next start notices, unpacks it again saying so in one line,
and runs (issue 13). The launcher's side of this on synthetic runners: tests/unit/test_backend_launcher.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from edgebundle.backends.bundle import read_trailer
from tests.integration.conftest import Built, run_binary

pytestmark = pytest.mark.build


def some(key_dir: Path, pattern: str) -> Path:
    found = sorted(p for p in key_dir.rglob(pattern) if p.is_file() and not p.is_symlink())
    assert found, f"no {pattern} in the runner"
    return found[0]


def delete(pattern: str) -> Callable[[Path], None]:
    return lambda key_dir: some(key_dir, pattern).unlink()


def truncate(key_dir: Path) -> None:
    victim = some(key_dir, "libpython3*.so*")
    victim.chmod(0o600)
    os.truncate(victim, victim.stat().st_size // 2)


def empty(key_dir: Path) -> None:
    for p in key_dir.iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


@pytest.mark.parametrize(
    "damage",
    # (no .pyc files: the runner's Python modules are all in base_library.zip, pyinstaller.finish)
    [delete("*.so"), delete("lib*.so.*"), delete("*.zip"), truncate, empty],
    ids=["so-deleted", "library-deleted", "zip-deleted", "libpython-truncated", "emptied"],
)
def test_a_damaged_runtime_is_unpacked_again(
    damage: Callable[[Path], None], digits_float: Built, tmp_path: Path
) -> None:
    first = run_binary(digits_float.path, "--self-test", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "home" / ".cache" / "edgebundle" / "run"
    key_dir = run / read_trailer(digits_float.path).key
    before = sizes(key_dir)
    damage(key_dir)
    assert sizes(key_dir) != before

    after = run_binary(digits_float.path, "--self-test", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    lines = after.stderr.splitlines()
    assert len(lines) == 1, after.stderr
    prog = digits_float.path.name
    assert lines[0].startswith(f"{prog}: warning: the unpacked runtime in {key_dir} was damaged (")
    assert lines[0].endswith("; unpacked it again")
    assert sizes(key_dir) == before
    assert sorted(p.name for p in run.iterdir()) == [".lock", key_dir.name]  # the damaged copy is gone
    again = run_binary(digits_float.path, "--self-test", cwd=tmp_path)
    assert again.returncode == 0
    assert again.stderr == ""


def sizes(key_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(key_dir)): p.lstat().st_size for p in key_dir.rglob("*") if not p.is_dir()}
