"""Outputs never destroy anything: every output path is checked before any work, and written atomically.

Each case runs the real CLI against real special files (a FIFO, a socket, a device node, a read-only
and a full file system mounted in a private mount namespace) and checks that the input is untouched."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgebundle import outputs
from edgebundle.cli import main
from edgebundle.errors import OutputError
from tests.conftest import FIXTURES, MODELS, in_ci

MODEL = MODELS / "digits_float.tflite"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the model, a recipe and labels, in an empty directory that is the cwd."""
    shutil.copy(MODEL, tmp_path / "model.tflite")
    recipe = (FIXTURES.parent.parent / "recipes" / "digits.toml").read_text()
    (tmp_path / "r.toml").write_text(recipe.replace("digits-labels.txt", "labels.txt"))
    shutil.copy(FIXTURES.parent.parent / "recipes" / "digits-labels.txt", tmp_path / "labels.txt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_refused(err: str, code: int, path: str, words: str) -> None:
    assert code == OutputError.exit_code, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"edgebundle: error: {path}: "), err
    assert words in line, err
    assert "Traceback" not in err


@pytest.mark.parametrize("victim", ["model.tflite", "r.toml", "labels.txt"])
def test_output_naming_an_input_is_refused_and_the_input_untouched(workspace: Path, victim: str) -> None:
    before = digest(workspace / victim)
    code, _, err = invoke("build", "model.tflite", "--recipe", "r.toml", "-o", victim)
    assert_refused(err, code, victim, "names an input of this command")
    assert digest(workspace / victim) == before


def test_output_reaching_an_input_through_a_symlink_or_hard_link_is_refused(workspace: Path) -> None:
    (workspace / "out").mkdir()
    os.symlink(workspace / "model.tflite", workspace / "out" / "via-symlink")
    os.link(workspace / "model.tflite", workspace / "via-hardlink")
    before = digest(workspace / "model.tflite")
    for out in ("out/via-symlink", "via-hardlink"):
        code, _, err = invoke("build", "model.tflite", "--recipe", "r.toml", "-o", out)
        assert_refused(err, code, out, "names an input")
    assert digest(workspace / "model.tflite") == before


def test_report_naming_the_binary_or_the_model_is_refused(workspace: Path) -> None:
    code, _, err = invoke("build", "model.tflite", "--recipe", "r.toml", "-o", "app", "--json-out", "app")
    assert_refused(err, code, "app", "--json-out names an input")
    # --report: the old name of --json-out
    code, _, err = invoke("build", "model.tflite", "--recipe", "r.toml", "--report", "model.tflite")
    assert_refused(err, code, "model.tflite", "--json-out names an input")


def test_special_files_are_refused_and_left_as_they_are(workspace: Path) -> None:
    os.mkfifo(workspace / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(workspace / "sock"))
    (workspace / "adir").mkdir()
    try:
        cases = [
            ("/dev/null", "character device"),
            ("fifo", "FIFO"),
            ("sock", "socket"),
            ("adir", "is a directory"),
        ]
        for out, words in cases:
            code, _, err = invoke("build", "model.tflite", "--recipe", "r.toml", "-o", out)
            assert_refused(err, code, out, words)
        assert os.path.exists("/dev/null")
        assert not Path("/dev/null").is_file()
        assert (workspace / "fifo").is_fifo()
        assert (workspace / "sock").is_socket()
    finally:
        sock.close()


def test_device_test_reports_are_checked_before_measuring(workspace: Path) -> None:
    binary = workspace / "model.tflite"  # any file: the report paths are refused before it is read
    code, _, err = invoke("test", str(binary), "--json-out", str(binary))
    assert_refused(err, code, str(binary), "--json-out names an input")
    code, _, err = invoke("test", str(binary), "--json-out", "r.json", "--junit", "r.json")
    assert_refused(err, code, "r.json", "--junit names an input")
    code, _, err = invoke("test", str(binary), "--junit", "/dev/null")
    assert_refused(err, code, "/dev/null", "character device")


def test_name_too_long_and_unwritable_places(workspace: Path) -> None:
    long_name = "x" * 300
    code, _, err = invoke("build", "model.tflite", "--recipe", "r.toml", "-o", long_name)
    assert_refused(err, code, long_name, "name too long")
    code, _, err = invoke("build", "model.tflite", "--recipe", "r.toml", "-o", "/proc/self/app")
    assert_refused(err, code, "/proc/self/app", "cannot write here")
    assert sorted(p.name for p in workspace.iterdir()) == ["labels.txt", "model.tflite", "r.toml"]


def test_a_name_of_255_bytes_is_written(tmp_path: Path) -> None:
    # the temporary name next to it would be longer than NAME_MAX: it must still work
    target = tmp_path / ("y" * 255)
    outputs.check(target, "--report")
    outputs.write(target, "{}\n")
    assert target.read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_stale_partials_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    dead_pid = int(dead.stdout)
    target = tmp_path / "app"
    (tmp_path / f".app.partial-{dead_pid}").write_bytes(b"half")
    (tmp_path / f".app.partial-{os.getpid()}").write_bytes(b"mine, in progress")
    (tmp_path / ".other.partial-1").write_bytes(b"another output's")
    removed = outputs.sweep_partials(target)
    assert [p.name for p in removed] == [f".app.partial-{dead_pid}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".app.partial-{os.getpid()}", ".other.partial-1"]
    )


def _mount_namespace_available() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _mount_namespace_available() and not in_ci(),
    reason="needs root and unshare --mount (CI has both)",
)

MOUNTED = r"""
set -e
mount -t tmpfs -o {opts} tmpfs "$1"
shift
"$@"
"""


def run_in_mount(mountpoint: Path, opts: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with a tmpfs mounted (``opts``) at ``mountpoint``, in a private mount
    namespace, so that nothing stays mounted."""
    unshare = ["unshare", "--mount", "--propagation", "private"]
    script = ["sh", "-c", MOUNTED.format(opts=opts), "sh", str(mountpoint)]
    return subprocess.run(
        [*unshare, *script, *command], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )


def eb_in_mount(mountpoint: Path, opts: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_in_mount(mountpoint, opts, sys.executable, "-m", "edgebundle", *argv)


@needs_mounts
def test_read_only_file_system_is_refused_before_any_work(workspace: Path) -> None:
    (workspace / "ro").mkdir()
    proc = eb_in_mount(
        workspace / "ro", "ro,size=1m", "build", "model.tflite", "--recipe", "r.toml", "-o", "ro/app"
    )
    assert_refused(proc.stderr, proc.returncode, "ro/app", "read-only file system")
    assert proc.stderr.count("\n") == 1  # refused before the plan was printed, before any work


@needs_mounts
def test_full_file_system_is_one_line_naming_the_path_and_leaves_nothing(workspace: Path) -> None:
    full = workspace / "full"
    full.mkdir()
    script = (
        "import sys\nfrom pathlib import Path\nfrom edgebundle import outputs\n"
        "from edgebundle.errors import OutputError\n"
        "target = Path(sys.argv[1])\noutputs.check(target, '--json')\n"
        "try:\n    outputs.write(target, 'x' * (2 << 20))\nexcept OutputError as e:\n"
        "    print(e)\n    print(sorted(p.name for p in target.parent.iterdir()))\n    sys.exit(9)\n"
    )
    proc = run_in_mount(full, "size=1m", sys.executable, "-c", script, str(full / "report.json"))
    assert proc.returncode == 9, proc.stderr
    message, left = proc.stdout.strip().splitlines()
    assert message == f"{full / 'report.json'}: cannot write: no space left on the device"
    assert left == "[]"
