"""The output contract of the real CLI, as a CI log sees it (stdout and stderr are not terminals):
one line per step, commands only with -v, only the result with -q, and with --json nothing on stdout
but JSON that parses, for every command that has a result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MODELS
from tests.integration.conftest import edgebundle

pytestmark = pytest.mark.build


def eb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return edgebundle(*args, cwd=cwd)


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the digits example was built once (environment and runner cached)."""
    work = tmp_path_factory.mktemp("out")
    proc = eb("build", str(MODELS / "digits_float.tflite"), "--recipe", "digits", "-o", "app", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


def build_args() -> list[str]:
    return ["build", str(MODELS / "digits_float.tflite"), "--recipe", "digits", "-o", "app"]


def test_a_cached_build_prints_a_line_per_step_and_no_commands(cached: Path) -> None:
    proc = eb(*build_args(), cwd=cached)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert len(err) + len(proc.stdout.splitlines()) <= 8, proc.stderr
    assert not [line for line in err if line.startswith("+ ")]
    assert err[0].startswith("building app from digits_float.tflite with recipe digits: x86_64")
    assert [line.split(":")[0].split(" (")[0] for line in err[1:]] == [
        "build environment",
        "model check with litert",
        "runner",
        "checks",
    ]
    assert all(line.endswith(" s)") for line in err[1:])
    assert proc.stdout.startswith("built app: ")
    assert len(proc.stdout.splitlines()) == 1


def test_quiet_is_the_result_line_only_and_verbose_shows_every_command(cached: Path) -> None:
    quiet = eb(*build_args(), "-q", cwd=cached)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert quiet.stdout.startswith("built app: ")
    verbose = eb("-v", *build_args(), cwd=cached)  # before the command works too
    assert verbose.returncode == 0, verbose.stderr
    commands = [line for line in verbose.stderr.splitlines() if line.startswith("+ ")]
    assert any("-m ebrt.buildtime reference" in c for c in commands)
    assert "output:      app" in verbose.stderr  # the whole plan


def test_errors_stay_one_line_even_when_quiet(cached: Path) -> None:
    proc = eb("build", "missing.tflite", "--recipe", "digits", "-q", cwd=cached)
    assert proc.returncode == 3
    assert proc.stderr == "edgebundle: error: missing.tflite: model file not found\n"


@pytest.mark.parametrize(
    "args",
    [
        ["build", str(MODELS / "digits_float.tflite"), "--recipe", "digits", "-o", "app", "--json"],
        ["test", "app", "--runs", "1", "--json"],
        ["inspect", "app", "--json"],
        ["inspect", str(MODELS / "digits_float.tflite"), "--json"],
        ["targets", "--json"],
        ["recipes", "--json"],
        ["interpreters", "--json"],
        ["toolchain", "list", "--json"],
        ["cache", "--json"],
        ["matrix"],
    ],
    ids=lambda a: " ".join(a[:1] + [x for x in a[1:] if x.startswith("--") or x == "list"]),
)
def test_json_on_stdout_and_nothing_else(cached: Path, args: list[str]) -> None:
    proc = eb(*args, cwd=cached)
    assert proc.returncode == 0, proc.stderr[-2000:]
    json.loads(proc.stdout)
