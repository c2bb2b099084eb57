"""NumPy built from source without OpenBLAS for the tflite-runtime targets (pins.toml
[interpreters.*.build-from-source], edgebundle/toolchains/venv.py): what the pins say, and that it
is part of the build environment's identity."""

from __future__ import annotations

import pytest

from edgebundle.errors import ConfigError
from edgebundle.target import load_target
from edgebundle.toolchains.venv import HostVenv, pinned_version, source_builds


def test_tflite_runtime_builds_numpy_without_blas() -> None:
    builds = source_builds("tflite-runtime")
    assert set(builds) == {"numpy"}
    settings = builds["numpy"]
    assert "-Csetup-args=-Dblas=none" in settings
    assert "-Csetup-args=-Dlapack=none" in settings
    assert "-Csetup-args=-Dallow-noblas=true" in settings


def test_litert_uses_wheels_only() -> None:
    # NumPy 2's wheels, untouched: LiteRT's own library dwarfs what a source build would save
    assert source_builds("ai-edge-litert") == {}


def test_source_builds_change_the_environment() -> None:
    x86 = HostVenv(load_target("x86_64"), "pyinstaller")
    assert x86.source_builds == source_builds("tflite-runtime")
    assert "numpy==1.26.4" in x86.requires
    assert pinned_version(x86.requires, "numpy") == "1.26.4"
    # LiteRT's environment keeps the key it had before source builds existed
    litert = HostVenv(load_target("x86_64-litert"), "pyinstaller")
    assert litert.path.name.startswith("ai-edge-litert-pyinstaller-py3.11-")
    assert x86.path != litert.path


def test_a_source_build_needs_a_pin() -> None:
    with pytest.raises(ConfigError, match="numpy==VERSION"):
        pinned_version(["pillow==11.3.0"], "numpy")
