"""``--isolated``: a native build inside a Debian bookworm root of the host's arch, as the CI matrix
builds every target x backend (a runner's own libraries, Ubuntu 24.04's say, would raise the binary's
glibc floor). Checked here as the matrix would: the digits binary builds, passes its self-test and
gives the outputs of the host venv's binary, with the Pillow the root builds from source; for
x86_64-tflite the root's NumPy is Debian's (no OpenBLAS, stripped); ai-edge-litert, whose NumPy 2
only the PyPI wheel provides there, builds unstripped and still runs; and Nuitka brings the system
BLAS that Debian's NumPy links.

Needs root (mmdebstrap --mode=root) and mmdebstrap: scripts/setup.sh installs it. Under CI=true a
missing piece fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgebundle.buildenv import debian_root
from edgebundle.inspection import inspect_binary
from edgebundle.target import load_target
from tests.conftest import DIGITS, in_ci
from tests.integration.conftest import Built, assert_outputs_equal, binary_outputs, build

pytestmark = pytest.mark.build


@pytest.fixture(scope="module", autouse=True)
def can_make_roots() -> None:
    missing = None
    if not debian_root(load_target("x86_64"), "pyinstaller").exists() and os.geteuid() != 0:
        missing = "creating a build root needs root"
    elif shutil.which("mmdebstrap") is None:
        missing = "mmdebstrap not installed (bash scripts/setup.sh as root installs it)"
    if missing:
        if in_ci():
            pytest.fail(f"--isolated tests cannot run: {missing}")
        pytest.skip(missing)


def test_isolated_build_matches_the_host_build(out_dir: Path, digits_float: Built, tmp_path: Path) -> None:
    built = build(out_dir, "digits_float.tflite", "digits", "--isolated", name="digits_isolated")
    assert (built.manifest["interpreter"]["name"], built.manifest["numpy"]) == ("litert", "")
    image = DIGITS / "sample_7.png"
    assert_outputs_equal(
        binary_outputs(built, image, tmp_path), binary_outputs(digits_float, image, tmp_path)
    )
    report = inspect_binary(built.path)
    libraries = " ".join(lib["path"].rsplit("/", 1)[-1] for lib in report["libraries"])
    assert "libjpeg" in libraries  # Pillow built in the root: JPEG and zlib, no libtiff
    assert "libtiff" not in libraries
    assert report["glibc_floor"] == "2.36"
    assert built.path.stat().st_size <= 12_000_000


def test_isolated_tflite_takes_debians_numpy(out_dir: Path, digits_float: Built, tmp_path: Path) -> None:
    built = build(
        out_dir, "digits_float.tflite", "digits", "--isolated", "--target", "x86_64-tflite", name="tflite_iso"
    )
    assert built.manifest["numpy"] == "1.24.2"  # bookworm's python3-numpy, not the PyPI wheel
    image = DIGITS / "sample_7.png"
    assert_outputs_equal(
        binary_outputs(built, image, tmp_path), binary_outputs(digits_float, image, tmp_path)
    )
    libraries = " ".join(lib["path"] for lib in inspect_binary(built.path)["libraries"])
    assert "openblas" not in libraries.lower()
    assert built.path.stat().st_size <= 12_000_000


def test_isolated_litert_keeps_numpy_2s_openblas_unstripped(out_dir: Path, tmp_path: Path) -> None:
    built = build(
        out_dir, "digits_float.tflite", "digits", "--isolated", "--target", "x86_64-litert", name="litert_iso"
    )
    assert built.manifest["interpreter"]["name"] == "ai-edge-litert"
    assert built.manifest["numpy"].startswith("2.")
    binary_outputs(built, DIGITS / "sample_7.png", tmp_path)  # it runs: OpenBLAS was not stripped


@pytest.mark.nuitka
def test_isolated_nuitka_brings_debians_blas(out_dir: Path, digits_float: Built, tmp_path: Path) -> None:
    """x86_64-tflite: Debian's NumPy links the system's BLAS (through update-alternatives), which
    Nuitka leaves out as a library from outside the Python installation unless told (nuitka_plugin/):
    without it the program cannot import NumPy at all."""
    built = build(
        out_dir,
        "digits_float.tflite",
        "digits",
        "--isolated",
        "--target",
        "x86_64-tflite",
        "--backend",
        "nuitka",
        name="nuitka_iso",
    )
    assert built.manifest["backend"] == "nuitka"
    assert built.manifest["numpy"] == "1.24.2"
    image = DIGITS / "sample_7.png"
    assert_outputs_equal(
        binary_outputs(built, image, tmp_path), binary_outputs(digits_float, image, tmp_path)
    )
    libraries = " ".join(lib["path"] for lib in inspect_binary(built.path)["libraries"])
    assert "libblas.so.3" in libraries
    assert inspect_binary(built.path)["glibc_floor"] == "2.36"
