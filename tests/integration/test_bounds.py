"""The real binary reads what it is given, within bounds (issue #13): image bit depths, the pixel
limit in every mode, interpreter threads, and where ``--save-outputs`` may write."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.loadtest import gray_png
from tests.conftest import DIGITS, IMAGES
from tests.integration.conftest import CLEAN_ENV, Built, binary_outputs, run_binary, sha256

pytestmark = pytest.mark.build

SEVEN = DIGITS / "sample_7.png"


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_16_bit_image_gives_the_outputs_of_its_8_bit_version(digits_float: Built, tmp_path: Path) -> None:
    # gray16.png holds v * 257 for v = 0..255; the binary used to see 255 almost everywhere.
    eight = tmp_path / "gray8.png"
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(eight)
    got = binary_outputs(digits_float, IMAGES / "gray16.png", tmp_path)
    want = binary_outputs(digits_float, eight, tmp_path)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    white = tmp_path / "white.png"
    Image.new("L", (16, 16), 255).save(white)
    assert not np.array_equal(binary_outputs(digits_float, white, tmp_path)[key], got[key])


def test_the_pixel_limit_holds_on_the_command_line(digits_float: Built, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(gray_png(12000, 12000))  # 144 MP of black: 140 KB on disk, 144 MB decoded
    proc = run_binary(digits_float.path, str(big), str(SEVEN), cwd=tmp_path)
    assert proc.returncode == 2
    assert one_line(proc.stderr).startswith(f"{digits_float.path.name}: error: {big}: image too large: ")
    assert "144.0 megapixels, over the limit of 40 (--max-megapixels)" in proc.stderr
    assert [json.loads(line)["image"] for line in proc.stdout.splitlines()] == [str(SEVEN)]

    out = tmp_path / "out.npz"
    for args in (("--save-outputs", str(out), str(big)), ("--eb-bench", "1", str(big))):
        proc = run_binary(digits_float.path, *args, cwd=tmp_path)
        assert proc.returncode == 2, args
        assert f"{big}: image too large" in one_line(proc.stderr)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []

    proc = run_binary(digits_float.path, "--max-megapixels", "150", str(big), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_binary(digits_float.path, "--max-megapixels", "0", str(SEVEN), cwd=tmp_path)
    assert (proc.returncode, one_line(proc.stderr)) == (
        2,
        "digits_float: error: --max-megapixels must be > 0",
    )


def test_threads_are_capped_at_the_cpus_and_must_be_positive(digits_float: Built, tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    proc = run_binary(digits_float.path, "--threads", "100000", str(SEVEN), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert one_line(proc.stderr) == (
        f"digits_float: warning: --threads 100000 is more than the {cpus} CPUs this process may use: "
        f"using {cpus}"
    )
    assert json.loads(proc.stdout)["top_k"][0]["label"] == "seven"
    for value in ("0", "-3"):
        proc = run_binary(digits_float.path, "--threads", value, str(SEVEN), cwd=tmp_path)
        assert (proc.returncode, one_line(proc.stderr)) == (2, "digits_float: error: --threads must be >= 1")
        assert proc.stdout == ""


def test_save_outputs_refuses_what_it_cannot_write_before_any_work(
    digits_float: Built, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    copy = tmp_path / "copy"
    copy.write_bytes(digits_float.path.read_bytes())
    copy.chmod(0o755)
    before = sha256(copy)
    cases = {
        str(tmp_path): "is a directory",
        "/dev/null": "not a regular file (a device, FIFO or socket)",
        str(fifo): "not a regular file (a device, FIFO or socket)",
        str(tmp_path / "sock"): "not a regular file (a device, FIFO or socket)",
        str(copy): "is this program itself",
        "/proc/out.npz": "cannot write: ",
        str(tmp_path / ("x" * 300 + ".npz")): "cannot write: File name too long",
        str(tmp_path / "missing" / "out.npz"): "cannot write: No such file or directory",
    }
    try:
        for path, message in cases.items():
            proc = run_binary(copy, "--save-outputs", path, str(SEVEN), cwd=tmp_path)
            assert proc.returncode == 2, path
            assert one_line(proc.stderr).startswith(f"copy: error: {path}: {message}"), path
            assert proc.stdout == "", "refused before inferring"
    finally:
        sock.close()
    assert sha256(copy) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_save_outputs_that_cannot_be_written_whole_leaves_nothing(
    digits_float: Built, tmp_path: Path
) -> None:
    out = tmp_path / "out.npz"
    run_binary(digits_float.path, "--self-test", cwd=tmp_path)  # unpacks the runner while it may

    def small_files() -> None:  # a full disk, as far as this process can tell: EFBIG past 100 bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    proc = subprocess.run(
        [str(digits_float.path), "--save-outputs", str(out), str(SEVEN)],
        capture_output=True,
        text=True,
        cwd=tmp_path / "run",
        env={**CLEAN_ENV, "HOME": str(tmp_path / "home")},
        preexec_fn=small_files,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc.stderr) == f"digits_float: error: {out}: cannot write: File too large"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "run"]
    proc = run_binary(digits_float.path, "--save-outputs", str(out), str(SEVEN), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        assert len(data.files) == 1
