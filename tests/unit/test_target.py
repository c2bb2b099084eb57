from __future__ import annotations

import platform

import pytest

from edgebundle.errors import ConfigError
from edgebundle.target import ARCH_SYNONYMS, host_arch, load_target, normalize_arch
from tests.conftest import FIXTURES

BAD = FIXTURES / "bad-targets"


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("arm64", "aarch64"),
        ("aarch64", "aarch64"),
        ("amd64", "x86_64"),
        ("x86_64", "x86_64"),
        ("ARM64", "aarch64"),
    ],
)
def test_synonyms_pick_the_same_target(name: str, arch: str) -> None:
    target = load_target(name)
    assert target.arch == arch
    assert target.name == ("arm64" if arch == "aarch64" else "x86_64")


def test_host_is_this_machine() -> None:
    assert load_target("host").arch == normalize_arch(platform.machine()) == host_arch()


def test_every_synonym_maps_to_a_known_arch() -> None:
    assert set(ARCH_SYNONYMS.values()) == {"x86_64", "aarch64"}


def test_bundled_targets_carry_budgets_and_interpreters() -> None:
    x86 = load_target("x86_64")
    assert x86.interpreter == "litert"
    assert x86.python == "3.11"
    assert x86.budgets.max_size_mb
    assert x86.budgets.max_startup_ms
    assert x86.budgets.max_rss_mb
    assert load_target("arm64").interpreter == "litert"
    assert (
        load_target("x86_64-tflite").interpreter
        == load_target("arm64-tflite").interpreter
        == "tflite-runtime"
    )
    litert = load_target("x86_64-litert")
    assert litert.interpreter == "ai-edge-litert"


@pytest.mark.parametrize(("old", "new"), [("x86_64-lean", "x86_64"), ("arm64-lean", "arm64")])
def test_the_lean_targets_old_names_still_resolve(old: str, new: str) -> None:
    target = load_target(old)
    assert (target.name, target.interpreter) == (new, "litert")


def test_interpreter_override() -> None:
    assert load_target("x86_64", interpreter_override="ai-edge-litert").interpreter == "ai-edge-litert"
    with pytest.raises(ConfigError, match=r"^--interpreter: unknown interpreter 'tflite'"):
        load_target("x86_64", interpreter_override="tflite")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad-arch", "arch: unknown architecture 'arm46'"),
        (
            "typo-interpreter",
            "interpreter: unknown interpreter 'tflite-runtim' (did you mean \"tflite-runtime\"?)",
        ),
        ("python-without-wheels", "python: tflite-runtime has no wheels for Python 3.12"),
        ("bad-glibc", "glibc_floor: expected a version like '2.31', got '2.36.1'"),
        ("typo-table", 'budget: unknown key (did you mean "budgets"?)'),
        ("negative-budget", "[budgets].max_size_mb: must be positive, got -1.0"),
        ("missing-arch", "arch: missing"),
    ],
)
def test_bad_target_names_file_and_key(name: str, message: str) -> None:
    path = BAD / f"{name}.toml"
    with pytest.raises(ConfigError) as info:
        load_target(str(path))
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_unknown_target_name_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown target 'arm' .*choose host"):
        load_target("arm")
