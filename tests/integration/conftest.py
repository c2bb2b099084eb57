"""Helpers for the real tier: real builds with the real CLI, binaries run in empty directories."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgebundle.backends.bundle import read_trailer
from edgebundle.target import load_target
from edgebundle.toolchains import cache_dir
from edgebundle.toolchains.venv import HostVenv
from tests.conftest import FIXTURES, MODELS, ROOT

# No Python on PATH, nothing from the developer's environment: as on a gateway.
CLEAN_ENV = {"PATH": "/nonexistent", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Built:
    path: Path
    model: Path
    manifest: dict[str, Any]


def edgebundle(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgebundle", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def build(out_dir: Path, model: str, recipe: str, *extra: str, name: str | None = None) -> Built:
    out = out_dir / (name or Path(model).stem)
    proc = edgebundle("build", str(MODELS / model), "--recipe", recipe, "-o", str(out), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"built {out}: ")
    info = run_binary(out, "--info", cwd=out_dir)
    assert info.returncode == 0, info.stderr
    return Built(path=out, model=MODELS / model, manifest=json.loads(info.stdout))


def run_binary(
    binary: Path,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a built binary from an empty directory with a clean environment. Its HOME is elsewhere:
    the binary keeps its unpacked runtime in ~/.cache/edgebundle, never next to the user's files."""
    empty = cwd / "run"
    empty.mkdir(exist_ok=True)
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        cwd=empty,
        env={**CLEAN_ENV, "HOME": str(home), **(env or {})},
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


REFERENCE = """
import json, sys
from pathlib import Path
import numpy as np
from ebrt.session import Session
from ebrt.model import output_keys
root, image, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
s = Session(root, json.loads((root / "manifest.json").read_text()))
values, _ = s.infer(s.feeds_for_file(image))
arrays = {k: np.frombuffer(v.data, v.dtype).reshape(v.shape) for k, v in zip(output_keys(s.outputs), values)}
np.savez(out, **arrays)
"""


def reference_python(built: Built) -> str:
    """A Python (not frozen) with the interpreter ``built`` carries, on this host: this environment's
    own for tflite-runtime (a dev dependency), else the host build environment of that interpreter
    (made by any build of it on this host, whatever the target's arch)."""
    name = built.manifest["interpreter"]["name"]
    if name == "tflite-runtime":
        return sys.executable
    python = HostVenv(load_target("host", interpreter_override=name), "pyinstaller").python
    assert Path(python).exists(), (
        f"no build environment for {name} on this host: build with --interpreter {name}"
    )
    return str(python)


def reference_outputs(
    built: Built, image: Path, work: Path, python: str | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """The model run in-process (not frozen) by ``python``'s interpreter package (default: the one
    ``built`` carries, reference_python), same recipe."""
    root = work / "ref"
    if not root.exists():
        shutil.copytree(
            ROOT / "edgebundle" / "runtime", root / "ebrt", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copyfile(built.model, root / "model.tflite")
        (root / "manifest.json").write_text(json.dumps(built.manifest))
    out = work / "ref.npz"
    proc = subprocess.run(
        [python or reference_python(built), "-c", REFERENCE, str(root), str(image), str(out)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def binary_outputs(built: Built, image: Path, work: Path) -> dict[str, np.ndarray[Any, Any]]:
    out = work / "bin.npz"
    proc = run_binary(built.path, "--save-outputs", str(out), str(image), cwd=work)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def assert_outputs_equal(got: dict[str, np.ndarray[Any, Any]], want: dict[str, np.ndarray[Any, Any]]) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-5, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.fixture(scope="session")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("binaries")


@pytest.fixture(scope="session")
def digits_float(out_dir: Path) -> Built:
    return build(out_dir, "digits_float.tflite", "digits")


@pytest.fixture(scope="session")
def digits_int8(out_dir: Path) -> Built:
    return build(out_dir, "digits_int8.tflite", "digits")


@contextlib.contextmanager
def runner_moved_aside(binary: Path) -> Iterator[list[Path]]:
    """Move every cached runner with this binary's runner key (equal runners have equal keys: their
    content hash) aside, so that the next build runs the backend again from scratch; restore after."""
    key = read_trailer(binary).key
    runners = [
        p
        for p in (cache_dir() / "runners").iterdir()
        if p.is_dir()
        and (p / "runner.json").is_file()
        and json.loads((p / "runner.json").read_text())["key"] == key
    ]
    assert runners, f"no cached runner with key {key}"
    # Out of the runners directory: the rebuild prunes that directory down to its newest runners, and
    # would take a moved runner still in it for one of them.
    elsewhere = cache_dir() / "runners-aside"
    elsewhere.mkdir(exist_ok=True)
    moved = [(p, elsewhere / p.name) for p in runners]
    for path, aside in moved:
        shutil.rmtree(aside, ignore_errors=True)
        path.rename(aside)
    try:
        yield runners
    finally:
        for path, aside in moved:
            if not path.exists():
                aside.rename(path)
            shutil.rmtree(aside, ignore_errors=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fixture_recipe(name: str) -> str:
    return str(FIXTURES / "recipes" / f"{name}.toml")
