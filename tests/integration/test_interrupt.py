"""Nothing left behind: a real build refused, interrupted (SIGINT, SIGTERM, SIGHUP) or killed
(SIGKILL) at a real point of its work leaves no staging directory, no self-test directory and no
partial output, or has them swept by the next build and by ``edgebundle cache clean``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, MODELS

pytestmark = pytest.mark.build


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The user's cache (runners built by other tests are reused) with a TMPDIR of the test's own, so
    that its staging base can be inspected."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {**os.environ, "TMPDIR": str(tmp)}


def staging(env: dict[str, str]) -> Path:
    return Path(env["TMPDIR"]) / f"edgebundle-build-{os.getuid()}"


def leftovers(env: dict[str, str], out_dir: Path) -> list[str]:
    """Everything a build could leave: staging and self-test directories, partial outputs."""
    found = (
        [p.name for p in staging(env).iterdir() if not p.name.startswith(".")]
        if staging(env).exists()
        else []
    )
    found += [p.name for p in Path(env["TMPDIR"]).iterdir() if p.name != staging(env).name]
    found += [p.name for p in out_dir.iterdir()] if out_dir.exists() else []
    return found


def eb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgebundle", *args], env=env, capture_output=True, text=True, check=False
    )


def start_build(env: dict[str, str], out: Path, model: str = "digits_float.tflite") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgebundle",
            "build",
            str(MODELS / model),
            "--recipe",
            "digits",
            "-o",
            str(out),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 600  # the first build of a fresh cache makes its environment
    while not condition():
        assert proc.poll() is None, f"the build ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within 600 s"
        time.sleep(0.005)


def staged(env: dict[str, str]) -> bool:
    base = staging(env)
    return base.exists() and any((p / "app").exists() for p in base.iterdir() if not p.name.startswith("."))


def installing(out: Path) -> bool:
    return any(p.name.startswith(f".{out.name}.partial-") for p in out.parent.iterdir())


@pytest.fixture(scope="module", autouse=True)
def warm(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One complete build first, so that the environment and the runner are cached and the builds
    below reach every phase within seconds."""
    out = tmp_path_factory.mktemp("warm") / "digits"
    proc = eb(
        dict(os.environ), "build", str(MODELS / "digits_float.tflite"), "--recipe", "digits", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("phase", ["staging", "self-test"])
def test_an_interrupted_build_cleans_up_and_says_so(
    env: dict[str, str], tmp_path: Path, sig: signal.Signals, phase: str
) -> None:
    out = tmp_path / "dist" / "digits"
    proc = start_build(env, out)
    if phase == "staging":
        wait_for(lambda: staged(env), proc, "staging directory")
    else:
        out.parent.mkdir(exist_ok=True)
        wait_for(lambda: installing(out), proc, "partial output")
    # Stopped first, so that the build cannot finish between the check and the signal.
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1] == f"edgebundle: interrupted by {sig.name}; cleaned up"
    assert "Traceback" not in err
    assert leftovers(env, out.parent) == []


def test_a_killed_build_is_swept_by_the_next_build_and_by_cache_clean(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "dist" / "digits"
    out.parent.mkdir()
    proc = start_build(env, out)
    wait_for(lambda: installing(out), proc, "partial output")
    proc.kill()
    proc.communicate()
    partials = [p.name for p in out.parent.iterdir()]
    assert len(partials) == 1
    assert partials[0].startswith(".digits.partial-")
    [killed] = [p for p in staging(env).iterdir() if not p.name.startswith(".")]

    # Another build (another model: another staging directory) sweeps the killed one's directory,
    # the same output's build its partial.
    other = tmp_path / "dist" / "int8"
    done = start_build(env, other, "digits_int8.tflite")
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    assert not killed.exists()
    assert (out.parent / partials[0]).exists()  # another output's partial: not this build's to judge

    again = start_build(env, out)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert f"removed {out.parent / partials[0]} (left by a build that was killed)" in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits", "int8"]

    # And cache clean, for a killed build nobody repeats.
    proc = start_build(env, tmp_path / "dist" / "third")
    wait_for(lambda: staged(env), proc, "staging directory")
    proc.kill()
    proc.communicate()
    assert any(not p.name.startswith(".") for p in staging(env).iterdir())
    clean = eb(env, "cache", "clean", "staging")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("removed 1 cache entry")
    assert [p for p in staging(env).iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("bad-recipes/labels-count.toml", "labels"),
        ("bad-recipes/rgb-for-gray-model.toml", "[input].color"),
        ("bad-recipes/unknown-output.toml", "[output].tensor"),
    ],
)
def test_a_build_refused_after_staging_leaves_nothing(
    env: dict[str, str], tmp_path: Path, recipe: str, message: str
) -> None:
    path = FIXTURES / recipe
    out = tmp_path / "dist" / "digits"
    proc = eb(env, "build", str(MODELS / "digits_float.tflite"), "--recipe", str(path), "-o", str(out))
    assert proc.returncode in (3, 4), proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert leftovers(env, out.parent) == []


def test_a_custom_op_model_refused_after_staging_leaves_nothing(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "dist" / "custom"
    proc = eb(env, "build", str(MODELS / "custom_op.tflite"), "--recipe", "digits", "-o", str(out))
    assert proc.returncode == 4, proc.stderr
    assert "custom" in proc.stderr.strip().splitlines()[-1].lower()
    assert leftovers(env, out.parent) == []
