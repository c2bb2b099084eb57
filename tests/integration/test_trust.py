"""Reproducible builds, the embedded manifest, `edgebundle inspect` and the glibc floor (issue 8)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from edgebundle.errors import IntegrityError
from edgebundle.runtime.payload import PayloadBundle
from tests.conftest import FIXTURES, MODELS
from tests.integration.conftest import Built, build, edgebundle, run_binary, runner_moved_aside, sha256

pytestmark = pytest.mark.build


def inspect_json(path: Path) -> dict:  # type: ignore[type-arg]
    proc = edgebundle("inspect", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_manifest_is_a_small_sbom(digits_float: Built) -> None:
    m = digits_float.manifest
    assert m["distributions"]["ai-edge-litert"] == "2.1.6"
    assert set(m["distributions"]) == {"ai-edge-litert", "pillow"}  # no NumPy in the default binary
    assert not {"pyinstaller", "pip", "setuptools"} & set(m["distributions"])
    labels = Path(__file__).resolve().parents[2] / "recipes" / "digits-labels.txt"
    assert m["labels_sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()
    assert len(m["build_inputs_sha256"]) == 64
    assert m["model"]["inputs"][0]["shape"] == [1, 16, 16, 1]
    assert m["model_check"]["matches_manifest"] is True


def test_inspect_binary(digits_float: Built) -> None:
    report = inspect_json(digits_float.path)
    assert report["arch"] == "x86_64"
    assert report["size_bytes"] == digits_float.path.stat().st_size
    # the components account for the whole file (rounding of the compressed share aside)
    assert abs(sum(report["size_by_component"].values()) - report["size_bytes"]) < 100
    assert {"interpreter", "pillow", "python", "launcher", "model", "libc"} <= set(
        report["size_by_component"]
    )
    assert "numpy" not in report["size_by_component"]
    assert report["libc"]["mode"] == "bundled"  # the default: the device needs no C library
    assert report["libc"]["kernel_floor"] == "3.2.0"
    carried = tuple(int(x) for x in report["libc"]["glibc"].split("."))
    assert report["model_sha256_matches_manifest"] is True
    floor = tuple(int(x) for x in report["glibc_floor"].split("."))
    assert floor <= carried
    assert report["glibc_floor_set_by"]
    libs = {lib["path"].rsplit("/", 1)[-1]: lib for lib in report["libraries"]}
    assert any(name.startswith("libpython3.11") for name in libs)
    assert all(len(lib["sha256"]) == 64 for lib in libs.values())
    text = edgebundle("inspect", str(digits_float.path))
    assert f"C library: bundled glibc {report['libc']['glibc']} (Linux >= 3.2.0;" in text.stdout
    assert "size by component" in text.stdout


def test_inspect_model() -> None:
    report = inspect_json(MODELS / "custom_op.tflite")
    assert report["kind"] == "model"
    assert report["custom_ops"] == ["FlexMatrixDeterminant"]
    assert report["inputs"][0]["shape"] == [1, 16, 16, 1]


def tampered_copy(built: Built, out: Path) -> Path:
    """A copy of ``built`` with one byte flipped in the middle of its model, found through the payload's
    own index (runtime/payload.py), as damage or an edit in place would leave it."""
    fd = os.open(built.path, os.O_RDONLY)
    try:
        offset, length = PayloadBundle(fd).files[built.manifest["model"]["file"]]
    finally:
        os.close(fd)
    data = bytearray(built.path.read_bytes())
    data[offset + length // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    out.chmod(0o755)
    return out


def test_tampered_model_is_reported_by_the_binary_inspect_and_test(
    digits_float: Built, tmp_path: Path
) -> None:
    tampered = tampered_copy(digits_float, tmp_path / "tampered")
    selftest = run_binary(tampered, "--self-test", cwd=tmp_path)
    assert selftest.returncode == 1
    assert "does not match the manifest" in selftest.stderr
    info = run_binary(tampered, "--info", cwd=tmp_path)
    assert info.returncode == 1
    assert json.loads(info.stdout)["model_check"]["matches_manifest"] is False
    assert "does not match the manifest" in info.stderr
    # APP IMAGE does not hash the model (README: what each mode checks); it still runs.
    assert run_binary(tampered, str(FIXTURES / "digits" / "sample_7.png"), cwd=tmp_path).returncode == 0

    for args in ([], ["--json"]):
        proc = edgebundle("inspect", str(tampered), *args)
        assert proc.returncode == IntegrityError.exit_code == 10, proc.stderr
        assert proc.stderr == (
            f"edgebundle: error: {tampered}: the model's sha256 does not match the manifest "
            "(the binary was tampered with or damaged)\n"
        )
    assert (
        json.loads(edgebundle("inspect", str(tampered), "--json").stdout)["model_sha256_matches_manifest"]
        is False
    )
    assert "DOES NOT MATCH the manifest" in edgebundle("inspect", str(tampered)).stdout

    test = edgebundle("test", str(tampered), "--runs", "2")
    assert test.returncode == 10, test.stderr
    error = [line for line in test.stderr.splitlines() if line.startswith("edgebundle: error:")]
    assert error == [
        f"edgebundle: error: {tampered}: the model's digest does not match the manifest on local "
        "(the binary was tampered with or damaged); build it again"
    ]


@pytest.mark.parametrize("kind", ["not-edgebundle", "truncated", "not-elf"])
def test_inspect_refuses_other_files(kind: str, digits_float: Built, tmp_path: Path) -> None:
    path = tmp_path / kind
    if kind == "not-edgebundle":
        shutil.copyfile("/bin/ls", path)
        expected = "not an edgebundle binary"
    elif kind == "truncated":
        path.write_bytes(digits_float.path.read_bytes()[:2_000_000])
        expected = "not an edgebundle binary, or a truncated one"
    else:
        path.write_text("hello\n")
        expected = "not an ELF file"
    proc = edgebundle("inspect", str(path))
    assert proc.returncode == 3
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_rebuilding_from_nothing_is_byte_identical(digits_float: Built, out_dir: Path) -> None:
    """The cached runner moved aside: the second build runs PyInstaller again from scratch."""
    with runner_moved_aside(digits_float.path) as runners:
        again = build(out_dir, "digits_float.tflite", "digits", name="digits_float_rebuilt")
        assert any((path / "runner.json").is_file() for path in runners)  # really rebuilt
        assert sha256(again.path) == sha256(digits_float.path)
