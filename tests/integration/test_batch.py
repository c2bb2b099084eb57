"""The real binary's ``--batch`` mode through real pipes."""

from __future__ import annotations

import base64
import json
import selectors
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import DIGITS, IMAGES
from tests.integration.conftest import CLEAN_ENV, Built, run_binary

pytestmark = pytest.mark.build

WAIT_S = 60.0


def batch(built: Built, work: Path, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(built.path), "--batch", *args],
        input=stdin,
        capture_output=True,
        cwd=work,
        env={**CLEAN_ENV, "HOME": str(work)},
        timeout=WAIT_S * 5,
        check=False,
    )


def lines(*requests: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in requests)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def cli(built: Built, image: Path, work: Path) -> dict[str, Any]:
    proc = run_binary(built.path, str(image), cwd=work)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    del result["latency_ms"]
    return result


def test_one_result_line_per_request_in_order_errors_included(digits_float: Built, tmp_path: Path) -> None:
    seven, three = DIGITS / "sample_7.png", DIGITS / "sample_3.png"
    raw = tmp_path / "raw.npy"
    np.save(raw, np.zeros((1, 16, 16, 1), dtype=np.float32))
    stdin = lines(
        {"path": str(seven)},
        {"image_b64": b64(three), "id": "a-3"},
        {"path": str(tmp_path / "missing.png"), "id": 7},
        b"",  # blank lines are not requests
        b"{not json",
        b"[1, 2]",
        {"path": str(seven), "image_b64": b64(seven)},
        {"image_b64": "@@@ not base64 @@@"},
        {"image_b64": base64.b64encode(b"hello").decode()},
        {"path": str(IMAGES / "corrupt.png")},
        {"path": str(raw)},
        {"path": str(IMAGES / "rgb.jpg")},
    )
    proc = batch(digits_float, tmp_path, stdin)
    assert proc.returncode == 2, proc.stderr  # some requests failed; the others were answered
    assert proc.stderr == b""
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == 11

    first = out[0]
    del first["latency_ms"]
    assert first == cli(digits_float, seven, tmp_path)
    assert out[1]["id"] == "a-3"
    assert "image" not in out[1]
    assert out[1]["top_k"] == cli(digits_float, three, tmp_path)["top_k"]
    assert out[2] == {
        "id": 7,
        "image": str(tmp_path / "missing.png"),
        "error": "bad_image",
        "message": "no such file",
        "status": 400,
        "line": 3,
    }
    codes = [(r.get("error"), r.get("line")) for r in out[3:9]]
    assert codes == [
        ("bad_request", 5),
        ("bad_request", 6),
        ("bad_request", 7),
        ("bad_request", 8),
        ("bad_image", 9),
        ("bad_image", 10),
    ]
    assert "outputs" in out[9] or "top_k" in out[9]  # raw tensors, as the CLI takes them
    assert out[10]["image"].endswith("rgb.jpg")
    assert "top_k" in out[10]


def test_all_good_exits_0_and_keeps_order_with_several_workers(digits_float: Built, tmp_path: Path) -> None:
    requests = [{"id": i, "path": str(DIGITS / f"sample_{i % 10}.png")} for i in range(200)]
    proc = batch(digits_float, tmp_path, lines(*requests), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in out] == list(range(200))
    labels = [r["top_k"][0]["label"] for r in out[:10]]
    assert labels == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_limits_apply_in_batch_too(digits_float: Built, tmp_path: Path) -> None:
    big = base64.b64encode(b"\0" * 200_000).decode()
    stdin = lines({"image_b64": big}, {"path": str(DIGITS / "sample_1.png")})
    proc = batch(digits_float, tmp_path, stdin, "--max-body-mb", "0.1")
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert (out[0]["error"], out[0]["status"], out[0]["line"]) == ("body_too_large", 413, 1)
    assert out[1]["top_k"][0]["label"] == "one"
    assert proc.returncode == 2


def test_works_as_a_co_process_one_answer_per_request(digits_float: Built, tmp_path: Path) -> None:
    """Each answer comes as soon as its request is written: no buffering until EOF."""
    proc = subprocess.Popen(
        [str(digits_float.path), "--batch", "--workers", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**CLEAN_ENV, "HOME": str(tmp_path)},
    )
    assert proc.stdin
    assert proc.stdout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        for digit in (4, 2, 9):
            proc.stdin.write(lines({"path": str(DIGITS / f"sample_{digit}.png")}))
            proc.stdin.flush()
            assert sel.select(timeout=WAIT_S), "no answer while the pipe stays open"
            answer = json.loads(proc.stdout.readline())
            assert answer["image"].endswith(f"sample_{digit}.png")
        proc.stdin.close()
        assert proc.wait(timeout=WAIT_S) == 0
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_closed_stdout_ends_the_batch_quietly(digits_float: Built, tmp_path: Path) -> None:
    requests = lines(*[{"path": str(DIGITS / "sample_0.png")}] * 50)
    script = f"{digits_float.path} --batch | head -n 1"
    proc = subprocess.run(
        ["/bin/sh", "-c", script],
        input=requests,
        capture_output=True,
        cwd=tmp_path,
        env={**CLEAN_ENV, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=WAIT_S,
        check=False,
    )
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 1
    assert b"Traceback" not in proc.stderr
    assert b"BrokenPipe" not in proc.stderr
