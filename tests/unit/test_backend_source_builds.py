"""NumPy built from source without OpenBLAS for the tflite-runtime targets (pins.toml
[build-from-source], edgebundle/toolchains/venv.py): what the pins say, and that it
is part of the build environment's identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebundle import target
from edgebundle.errors import ConfigError
from edgebundle.target import interpreters, load_target
from edgebundle.tomlcheck import Table, read_toml
from edgebundle.toolchains.venv import HostVenv, pinned_version, source_builds


def test_tflite_runtime_builds_numpy_without_blas() -> None:
    builds = source_builds("tflite-runtime")
    assert set(builds) == {"numpy"}
    settings = builds["numpy"]
    assert "-Csetup-args=-Dblas=none" in settings
    assert "-Csetup-args=-Dlapack=none" in settings
    assert "-Csetup-args=-Dallow-noblas=true" in settings


def test_litert_builds_numpy_2_the_same_way() -> None:
    # NumPy 2's wheel brings OpenBLAS, which strip breaks: without it everything can be stripped
    assert source_builds("ai-edge-litert") == source_builds("tflite-runtime")
    assert interpreters()["ai-edge-litert"].source_builds == ("numpy",)


def test_a_listed_source_build_needs_its_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pins = tmp_path / "edgebundle" / "pins.toml"
    pins.parent.mkdir()
    pins.write_text(
        '[build-from-source]\nnumpy = ["-Cx"]\n[interpreters.a]\nmodule = "a"\ndistribution = "a"\n'
        'pythons = ["3.11"]\nrequires = ["a==1", "numpy==2", "pillow==1"]\n'
        'build-from-source = ["numpy", "pillow"]\n'
    )
    table = Table(pins, "", read_toml(pins, "pins"))
    monkeypatch.setattr(target, "_pins_table", lambda: table)
    with pytest.raises(ConfigError, match=r"pins.toml: \[build-from-source\]\.pillow: missing"):
        source_builds("a")


def test_source_builds_change_the_environment() -> None:
    x86 = HostVenv(load_target("x86_64-tflite"), "pyinstaller")
    assert x86.source_builds == source_builds("tflite-runtime")
    assert "numpy==1.26.4" in x86.requires
    assert pinned_version(x86.requires, "numpy") == "1.26.4"
    litert = HostVenv(load_target("x86_64-litert"), "pyinstaller")
    assert litert.path.name.startswith("ai-edge-litert-pyinstaller-py3.11-")
    assert pinned_version(litert.requires, "numpy") == "2.2.6"
    assert x86.path != litert.path


def test_a_source_build_needs_a_pin() -> None:
    with pytest.raises(ConfigError, match="numpy==VERSION"):
        pinned_version(["pillow==11.3.0"], "numpy")
