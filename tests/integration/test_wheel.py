"""The product as users get it: a wheel built from this checkout, installed into a fresh venv, run
from a directory outside the checkout (nothing of the source tree on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgebundle import __version__
from tests.conftest import DIGITS, MODELS, ROOT

pytestmark = pytest.mark.build


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``edgebundle`` command of a fresh venv with the wheel installed (not editable)."""
    work = tmp_path_factory.mktemp("wheel")
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        cwd=work,
    )
    [wheel] = wheels.glob("edgebundle-*.whl")
    assert wheel.name.startswith(f"edgebundle-{__version__}-")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        cwd=work,
    )
    return venv / "bin" / "edgebundle"


def outside(tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PWD": str(tmp_path)}


def run(installed: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(installed), *args],
        cwd=tmp_path,
        env=outside(tmp_path),
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_the_package_is_the_installed_one(installed: Path, tmp_path: Path) -> None:
    python = installed.parent / "python"
    proc = subprocess.run(
        [str(python), "-c", "import edgebundle; print(edgebundle.__file__)"],
        cwd=tmp_path,
        env=outside(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(proc.stdout.strip()).is_relative_to(installed.parent.parent)
    version = run(installed, tmp_path, "--version")
    assert version.returncode == 0
    assert __version__ in version.stdout


def test_targets_recipes_and_matrix_list_the_shipped_data(installed: Path, tmp_path: Path) -> None:
    targets = run(installed, tmp_path, "targets", "--json")
    assert targets.returncode == 0, targets.stderr
    shipped = {p.stem for p in (ROOT / "targets").glob("*.toml")}
    assert {t["name"] for t in json.loads(targets.stdout)} == shipped
    assert shipped >= {"x86_64", "x86_64-litert", "x86_64-tflite", "arm64", "arm64-tflite"}
    recipes = run(installed, tmp_path, "recipes", "--json")
    assert recipes.returncode == 0, recipes.stderr
    listed = json.loads(recipes.stdout)
    assert {r["name"] for r in listed} >= {"digits", "imagenet-mobilenet"}
    assert all(Path(r["path"]).is_relative_to(installed.parent.parent) for r in listed)
    matrix = run(installed, tmp_path, "matrix")
    assert matrix.returncode == 0, matrix.stderr
    jobs = json.loads(matrix.stdout)["include"]
    assert {(j["target"], j["backend"]) for j in jobs} >= {("x86_64", "pyinstaller"), ("arm64", "nuitka")}


def test_a_real_build_of_the_bundled_example(installed: Path, tmp_path: Path) -> None:
    built = run(installed, tmp_path, "build", str(MODELS / "digits_float.tflite"), "--recipe", "digits")
    assert built.returncode == 0, built.stderr[-3000:]
    app = tmp_path / "dist" / "digits_float"
    assert built.stdout.startswith(f"built {Path('dist') / 'digits_float'}: ")
    answer = subprocess.run(
        [str(app), str(DIGITS / "sample_7.png")],
        cwd=tmp_path,
        env={"PATH": "/nonexistent", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(answer.stdout)["top_k"][0]["label"] == "seven"
