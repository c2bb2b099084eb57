from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgebundle.cli import main
from tests.conftest import FIXTURES, MODELS


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", [[], ["build"], ["targets"], ["recipes"]])
def test_help(command: list[str]) -> None:
    code, out, _ = invoke(*command, "--help")
    assert code == 0
    assert "Usage:" in out


def test_targets_json() -> None:
    code, out, _ = invoke("targets", "--json")
    assert code == 0
    names = {t["name"]: t for t in json.loads(out)}
    assert names["arm64"]["arch"] == "aarch64"
    assert names["x86_64"]["budgets"]["max_size_mb"] > 0


def test_recipes_json() -> None:
    code, out, _ = invoke("recipes", "--json")
    assert code == 0
    assert {r["name"] for r in json.loads(out)} >= {"digits", "imagenet-mobilenet"}


def test_recipes_table() -> None:
    code, out, _ = invoke("recipes")
    assert code == 0
    assert "imagenet-mobilenet" in out


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (
            [str(MODELS / "digits_float.tflite"), "--recipe", str(FIXTURES / "bad-recipes/typo-key.toml")],
            3,
            '[input].colour: unknown key (did you mean "color"?)',
        ),
        ([str(MODELS / "not_a_model.tflite"), "--recipe", "digits"], 4, "not a TFLite model"),
        (["nope.tflite", "--recipe", "digits"], 3, "nope.tflite: model file not found"),
        (
            [str(MODELS / "digits_float.tflite"), "--recipe", "digits", "--target", "riscv"],
            3,
            "unknown target 'riscv'",
        ),
        (
            [str(MODELS / "digits_float.tflite"), "--recipe", "digits", "--backend", "go"],
            3,
            "--backend: unknown backend 'go'",
        ),
        (
            [str(MODELS / "digits_float.tflite"), "--recipe", "digits", "-o", "/dev/null/dir/x"],
            9,
            "/dev/null/dir/x: -o: cannot use this path: Not a directory",
        ),
    ],
)
def test_build_errors_are_one_line_with_their_exit_code(
    args: list[str], exit_code: int, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = invoke("build", *args)
    assert code == exit_code, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("edgebundle: error: ")
    assert message in lines[-1]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "dist"])
    assert not any((tmp_path / "dist").glob("*")) if (tmp_path / "dist").exists() else True


def test_an_unexpected_exception_is_one_line_exit_70_and_a_traceback_with_debug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(name: str) -> None:
        raise RuntimeError(f"a bug\nreading {name}")

    monkeypatch.setattr("edgebundle.cli.load_target", broken)
    code, out, err = invoke("targets")
    assert code == 70
    assert out == ""
    assert err == (
        "edgebundle: internal error: RuntimeError: a bug reading arm64; run with --debug for the "
        "traceback and report it\n"
    )
    result = CliRunner().invoke(main, ["--debug", "targets"])
    assert isinstance(result.exception, RuntimeError)


def test_every_command_is_covered_by_the_one_error_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    # `interpreters` had no handler of its own before the handler moved into the group
    def broken() -> None:
        raise KeyError("x86_64")

    monkeypatch.setattr("edgebundle.cli.interpreters", broken)
    code, _, err = invoke("interpreters")
    assert code == 70
    assert err.startswith("edgebundle: internal error: KeyError: 'x86_64'")
