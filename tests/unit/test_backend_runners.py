"""The builder's runner cache: what a runner's key is made of, and pruning."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgebundle.backends import BACKENDS, runners
from edgebundle.target import interpreters, load_target
from edgebundle.toolchains import COMPLETE, lock_path


class FakeToolchain:
    python = "/env/bin/python"
    library_root = None

    def describe(self) -> str:
        return "host venv /env"


def test_the_key_covers_pins_target_backend_libc_and_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    x86 = load_target("x86_64")
    pins = interpreters()[x86.interpreter]
    base = runners.runner_inputs(FakeToolchain(), x86, "pyinstaller", pins, "bundled")  # type: ignore[arg-type]
    system = runners.runner_inputs(FakeToolchain(), x86, "pyinstaller", pins, "system")  # type: ignore[arg-type]
    assert runners.runner_path(x86, "pyinstaller", base) != runners.runner_path(x86, "pyinstaller", system)
    assert base["requires"]
    assert base["sources"]
    assert base["arch"] == "x86_64"
    litert = load_target("x86_64-litert")
    other = runners.runner_inputs(
        FakeToolchain(),  # type: ignore[arg-type]
        litert,
        "pyinstaller",
        interpreters()[litert.interpreter],
        "bundled",
    )
    assert runners.runner_path(x86, "pyinstaller", base) != runners.runner_path(litert, "pyinstaller", other)
    monkeypatch.setattr(runners, "sources_digest", lambda backend: "changed")
    changed = runners.runner_inputs(FakeToolchain(), x86, "pyinstaller", pins, "bundled")  # type: ignore[arg-type]
    assert runners.runner_path(x86, "pyinstaller", changed) != runners.runner_path(x86, "pyinstaller", base)


def test_sources_digest_covers_runtime_launcher_and_hooks() -> None:
    digest = runners.sources_digest("pyinstaller")
    assert len(digest) == 64
    assert digest == runners.sources_digest("pyinstaller")


@pytest.mark.parametrize("backend", ["pyinstaller", "nuitka"])
def test_every_file_a_backend_lists_exists(backend: str) -> None:
    for name in (*runners.COMMON_SOURCES, *BACKENDS[backend].SOURCES):  # type: ignore[index]
        assert (runners._BACKENDS_DIR / name).exists(), name


def test_a_change_to_one_backend_leaves_the_others_runners_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "backends"
    shutil.copytree(runners._BACKENDS_DIR, fake, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runners, "_BACKENDS_DIR", fake)
    before = {b: runners.sources_digest(b) for b in ("pyinstaller", "nuitka")}
    plugin_c = fake / "nuitka_plugin" / "release_bytecode.c"
    plugin_c.write_text(plugin_c.read_text() + "\n")
    assert runners.sources_digest("pyinstaller") == before["pyinstaller"]
    assert runners.sources_digest("nuitka") != before["nuitka"]
    hook = next((fake / "pyinstaller_hooks").glob("pyi_rth_*.py"))
    hook.write_text(hook.read_text() + "\n")  # the NumPy hook both backends run
    assert runners.sources_digest("pyinstaller") != before["pyinstaller"]


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


class EnvToolchain(FakeToolchain):
    """Runs the OpenBLAS probe with a real Python, against a NumPy whose files it makes up."""

    def __init__(self, tmp: Path, files: list[str] | None) -> None:
        self.site = tmp / "site"
        dist = self.site / "numpy-2.2.6.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy\nVersion: 2.2.6\n")
        if files is not None:  # Debian's NumPy has no RECORD: files() is None
            (dist / "RECORD").write_text("".join(f"{f},,\n" for f in files))

    def run(
        self, argv: list[str], *, log: Path | None, what: str, timeout: float, cwd: Path | None = None
    ) -> str:
        env = {**os.environ, "PYTHONPATH": str(self.site)}
        return subprocess.run(
            [sys.executable, *argv[1:]], capture_output=True, text=True, env=env, check=True
        ).stdout


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["numpy/__init__.py", "numpy.libs/libscipy_openblas64_-56d6093b.so"], True),  # NumPy 2's wheel
        (["numpy/__init__.py", "numpy.libs/libopenblas64_p-r0-0cf96a72.3.23.dev.so"], False),  # 1.26's
        (["numpy/__init__.py", "numpy/core/_multiarray_umath.so"], False),  # built from source
        (None, False),  # Debian's python3-numpy
    ],
)
def test_only_numpy_2s_wheel_openblas_turns_stripping_off(
    tmp_path: Path, files: list[str] | None, expected: bool
) -> None:
    toolchain = EnvToolchain(tmp_path, files)
    assert runners._numpy_bundles_openblas(toolchain, tmp_path / "log") is expected  # type: ignore[arg-type]
