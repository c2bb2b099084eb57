"""Real PyInstaller builds of the fixture models, run as a user would run them on a device."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import DIGITS, IMAGES, MODELS
from tests.integration.conftest import (
    Built,
    assert_outputs_equal,
    binary_outputs,
    build,
    edgebundle,
    fixture_recipe,
    reference_outputs,
    run_binary,
)

pytestmark = pytest.mark.build

SAMPLES = [DIGITS / f"sample_{d}.png" for d in (0, 3, 7)] + [IMAGES / "rgb.jpg", IMAGES / "exif_rotated.jpg"]


def test_digits_binary_is_one_elf_that_runs_without_python(digits_float: Built, tmp_path: Path) -> None:
    data = digits_float.path.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert int.from_bytes(data[18:20], "little") == 62  # EM_X86_64
    proc = run_binary(digits_float.path, str(DIGITS / "sample_7.png"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["image"].endswith("sample_7.png")
    assert result["top_k"][0]["label"] == "seven"
    assert len(result["top_k"]) == 3
    assert 0.99 < sum(item["score"] for item in result["top_k"]) <= 1.0 + 1e-6
    assert result["latency_ms"] > 0
    assert list((tmp_path / "run").iterdir()) == []  # nothing written next to the user's files


def test_info_describes_the_build(digits_float: Built) -> None:
    m = digits_float.manifest
    assert m["backend"] == "pyinstaller"
    assert m["target"]["name"] == "x86_64"
    assert m["interpreter"] == {"name": "litert", "module": "ebrt.litert", "version": "2.1.6"}
    assert m["numpy"] == ""
    assert m["model"]["sha256"] == __import__("hashlib").sha256(digits_float.model.read_bytes()).hexdigest()
    assert m["recipe"]["input"]["tensor"] == "serving_default_image:0"
    assert m["labels"][7] == "seven"
    assert m["edgebundle_version"]


def test_version_and_help_are_self_contained(digits_float: Built, tmp_path: Path) -> None:
    version = run_binary(digits_float.path, "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    m = digits_float.manifest
    assert version.stdout == (
        f"digits_float: model digits_float.tflite (sha256 {m['model']['sha256'][:12]}), recipe digits, "
        f"target x86_64; built by edgebundle {m['edgebundle_version']} with pyinstaller, litert "
        f"{m['interpreter']['version']}, Python {m['python']}, no NumPy, Pillow {m['pillow']}\n"
    )
    # the device has no README: the help says what the modes take and answer
    usage = run_binary(digits_float.path, "--help", cwd=tmp_path)
    assert usage.returncode == 0
    assert "README" not in usage.stdout
    assert "POST /v1/infer" in usage.stdout
    assert "exit codes:" in usage.stdout


def test_self_test_passes(digits_float: Built, tmp_path: Path) -> None:
    proc = run_binary(digits_float.path, "--self-test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["self_test"] == "pass"


@pytest.mark.parametrize("image", SAMPLES, ids=lambda p: p.name)
def test_float_outputs_equal_in_process(digits_float: Built, image: Path, tmp_path: Path) -> None:
    assert_outputs_equal(
        binary_outputs(digits_float, image, tmp_path),
        reference_outputs(digits_float, image, tmp_path),
    )


@pytest.mark.parametrize("image", SAMPLES, ids=lambda p: p.name)
def test_int8_outputs_equal_in_process_exactly(digits_int8: Built, image: Path, tmp_path: Path) -> None:
    got = binary_outputs(digits_int8, image, tmp_path)
    assert next(iter(got.values())).dtype.name == "int8"
    assert_outputs_equal(got, reference_outputs(digits_int8, image, tmp_path))


@pytest.mark.parametrize("which", ["digits_float", "digits_int8"])
def test_holdout_accuracy_equals_python(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    built: Built = request.getfixturevalue(which)
    with open(DIGITS / "holdout.csv") as f:
        rows = list(csv.DictReader(f))
    proc = run_binary(built.path, *[str(DIGITS / r["file"]) for r in rows], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(rows) == 360
    correct = sum(int(r["label"]) == res["top_k"][0]["index"] for r, res in zip(rows, results, strict=True))
    python_accuracy = json.loads((MODELS / "fixtures.json").read_text())["digits"]["accuracy"][which]
    assert round(correct / len(rows), 6) == python_accuracy


def test_bad_images_are_one_line_errors_and_the_rest_still_runs(digits_float: Built, tmp_path: Path) -> None:
    bad = ["corrupt.png", "not_image.png", "empty.jpg", "missing.png"]
    args = [str(DIGITS / "sample_1.png"), *[str(IMAGES / b) for b in bad], str(DIGITS / "sample_2.png")]
    proc = run_binary(digits_float.path, *args, cwd=tmp_path)
    assert proc.returncode == 2
    labels = [json.loads(line)["top_k"][0]["label"] for line in proc.stdout.splitlines()]
    assert labels == ["one", "two"]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 4
    for name, line in zip(bad, errors, strict=True):
        assert line.startswith(f"digits_float: error: {IMAGES / name}: ")
    assert "Traceback" not in proc.stderr


def test_save_outputs_needs_exactly_one_image(digits_float: Built, tmp_path: Path) -> None:
    proc = run_binary(
        digits_float.path,
        "--save-outputs",
        str(tmp_path / "o.npz"),
        str(DIGITS / "sample_1.png"),
        str(DIGITS / "sample_2.png"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "exactly one IMAGE" in proc.stderr
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize(
    ("model", "recipe", "image"),
    [
        ("multi_out.tflite", "multi-out", IMAGES / "rgba.png"),
        ("two_inputs.tflite", "two-inputs", IMAGES / "exif_rotated.jpg"),
        ("nchw.tflite", "nchw", IMAGES / "rgb.jpg"),
    ],
)
def test_unusual_models(model: str, recipe: str, image: Path, out_dir: Path, tmp_path: Path) -> None:
    built = build(out_dir, model, fixture_recipe(recipe))
    assert_outputs_equal(binary_outputs(built, image, tmp_path), reference_outputs(built, image, tmp_path))
    proc = run_binary(built.path, str(image), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    if model == "multi_out.tflite":  # top-3 on the logits, the feature map listed as values
        assert len(result["top_k"]) == 3
        assert result["outputs"][0]["shape"] == [1, 4, 4, 8]
        assert len(result["outputs"][0]["values"]) == 128
    else:
        assert "outputs" in result


def test_litert_interpreter(out_dir: Path, tmp_path: Path) -> None:
    built = build(
        out_dir,
        "digits_float.tflite",
        "digits",
        "--target",
        "x86_64-litert",
        name="digits_litert",
    )
    assert built.manifest["interpreter"]["name"] == "ai-edge-litert"
    assert built.manifest["interpreter"]["module"] == "ai_edge_litert.interpreter"
    for image in SAMPLES[:3]:
        assert_outputs_equal(
            binary_outputs(built, image, tmp_path), reference_outputs(built, image, tmp_path)
        )
    assert run_binary(built.path, "--self-test", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("model", "recipe", "code", "message"),
    [
        ("truncated.tflite", "digits", 4, "truncated.tflite: truncated or damaged TFLite model"),
        ("custom_op.tflite", "digits", 4, "FlexMatrixDeterminant"),
        (
            "digits_float.tflite",
            "tests/fixtures/bad-recipes/rgb-for-gray-model.toml",
            3,
            "[input].color: color 'RGB' gives 3 channel(s)",
        ),
        (
            "two_inputs.tflite",
            "tests/fixtures/bad-recipes/two-inputs-unfed.toml",
            3,
            "[input].tensor: model has 2 inputs",
        ),
    ],
)
def test_refused_before_anything_is_built(
    model: str, recipe: str, code: int, message: str, tmp_path: Path
) -> None:
    from tests.conftest import ROOT

    out = tmp_path / "app"
    proc = edgebundle(
        "build",
        str(MODELS / model),
        "--recipe",
        str(ROOT / recipe) if "/" in recipe else recipe,
        "-o",
        str(out),
    )
    assert proc.returncode == code, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edgebundle: error: ")
    assert message in last
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no binary, no partial file
