"""The builder's runner cache: what a runner's key is made of, and pruning."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from edgebundle.backends import runners
from edgebundle.target import interpreters, load_target
from edgebundle.toolchains import COMPLETE, lock_path


class FakeToolchain:
    python = "/env/bin/python"
    library_root = None

    def describe(self) -> str:
        return "host venv /env"


def test_the_key_covers_pins_target_backend_and_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    x86 = load_target("x86_64")
    pins = interpreters()[x86.interpreter]
    base = runners.runner_inputs(FakeToolchain(), x86, "pyinstaller", pins)  # type: ignore[arg-type]
    assert base["requires"]
    assert base["sources"]
    assert base["arch"] == "x86_64"
    litert = load_target("x86_64-litert")
    other = runners.runner_inputs(
        FakeToolchain(),  # type: ignore[arg-type]
        litert,
        "pyinstaller",
        interpreters()[litert.interpreter],
    )
    assert runners.runner_path(x86, "pyinstaller", base) != runners.runner_path(litert, "pyinstaller", other)
    monkeypatch.setattr(runners, "sources_digest", lambda: "changed")
    changed = runners.runner_inputs(FakeToolchain(), x86, "pyinstaller", pins)  # type: ignore[arg-type]
    assert runners.runner_path(x86, "pyinstaller", changed) != runners.runner_path(x86, "pyinstaller", base)


def test_sources_digest_covers_runtime_launcher_and_hooks() -> None:
    digest = runners.sources_digest()
    assert len(digest) == 64
    assert digest == runners.sources_digest()


def make_runner(folder: Path, name: str, mtime: float) -> Path:
    path = folder / name
    path.mkdir()
    (path / COMPLETE).write_text("{}")
    (path / "runner.json").write_text(json.dumps({}))
    os.utime(path / "runner.json", (mtime, mtime))
    return path


def test_prune_keeps_the_most_recently_used_and_locked_ones(tmp_path: Path) -> None:
    paths = [make_runner(tmp_path, f"r{i}", 1000 + i) for i in range(5)]
    with open(lock_path(paths[0]), "w") as held:  # a build is using the oldest right now
        fcntl.flock(held, fcntl.LOCK_EX)
        runners.prune(tmp_path, 2, lambda _: None)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert left == ["r0", "r3", "r4"]
