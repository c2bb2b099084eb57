"""``edgebundle test``: its help, and each bad input a one-line error with the fix and its own exit
code (3 for what the user gave, 8 for what the device cannot do), never a traceback."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgebundle.cli import main
from edgebundle.errors import ConfigError, DeviceError
from edgebundle.target import host_arch
from tests.conftest import FIXTURES

DEVICE = FIXTURES / "device"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def error_line(code: int, stderr: str, exit_code: int) -> str:
    assert code == exit_code, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("edgebundle: error: ")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().endswith(errors[0])
    return errors[0].removeprefix("edgebundle: error: ")


def test_help_lists_the_options() -> None:
    code, out, _ = invoke("test", "--help")
    assert code == 0
    for option in (
        "--device",
        "--input",
        "--runs",
        "--target",
        "--json",
        "--junit",
        "ssh://[user@]host[:port]",
    ):
        assert option in out


def test_missing_binary(tmp_path: Path) -> None:
    code, _, err = invoke("test", str(tmp_path / "nope"))
    assert error_line(code, err, ConfigError.exit_code) == (
        f"{tmp_path / 'nope'}: no such file; give the path of a binary made by edgebundle build"
    )


def test_a_script_is_refused_before_anything_runs() -> None:
    code, _, err = invoke("test", str(DEVICE / "not-a-binary.sh"))
    assert error_line(code, err, ConfigError.exit_code) == (
        f"{DEVICE / 'not-a-binary.sh'} is not an edgebundle binary (not an ELF file); "
        "build one with: edgebundle build MODEL.tflite --recipe RECIPE"
    )
    assert "+ " not in err  # nothing ran


def test_a_program_that_is_not_ours(tmp_path: Path) -> None:
    true = tmp_path / "true"
    shutil.copy(shutil.which("true") or "/bin/true", true)
    code, _, err = invoke("test", str(true), "--runs", "1")
    message = error_line(code, err, ConfigError.exit_code)
    assert message == (
        f"{true} is not an edgebundle binary (`true --info` printed no edgebundle manifest); "
        "build one with: edgebundle build MODEL.tflite --recipe RECIPE"
    )


def test_a_foreign_arch_binary_on_local_points_to_qemu() -> None:
    host = host_arch()
    foreign = "aarch64" if host == "x86_64" else "x86_64"
    code, _, err = invoke("test", str(DEVICE / f"fake_app-{foreign}"))
    assert error_line(code, err, DeviceError.exit_code) == (
        f"{DEVICE / f'fake_app-{foreign}'} is an {foreign} binary but this host is {platform.machine()}; "
        f"test it with --device qemu or on an {foreign} device (--device ssh://HOST)"
    )


def test_a_binary_without_the_measuring_mode_says_to_rebuild() -> None:
    code, _, err = invoke("test", str(DEVICE / f"fake_app-{host_arch()}"), "--runs", "1")
    message = error_line(code, err, DeviceError.exit_code)
    assert message.startswith("measuring startup on local failed: ")
    assert message.endswith("(a binary from an older edgebundle lacks the measuring mode; rebuild it)")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--device", "ssh://host;reboot"],
            "--device 'ssh://host;reboot': expected ssh://[user@]host[:port]",
        ),
        (["--device", "pi"], "--device 'pi': expected local, qemu, or ssh://[user@]host[:port]"),
        (["--target", "x86-64"], "unknown target 'x86-64'"),
        (["--input", "/nonexistent.png"], "--input /nonexistent.png: no such file"),
    ],
)
def test_bad_options(args: list[str], expected: str) -> None:
    code, _, err = invoke("test", str(DEVICE / "fake_app-x86_64"), *args)
    assert expected in error_line(code, err, ConfigError.exit_code)


def test_runs_must_be_positive() -> None:
    code, _, err = invoke("test", str(DEVICE / "fake_app-x86_64"), "--runs", "0")
    assert code == 2
    assert "--runs" in err
