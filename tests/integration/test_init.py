"""``edgebundle init`` with the real CLI: the drafted recipe builds without edits and the binary
answers, for a classifier and for a model with the detection op (issue #16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, MODELS
from tests.integration.conftest import build, edgebundle, run_binary

pytestmark = pytest.mark.build

SQUARES = json.loads((FIXTURES / "detection" / "squares.json").read_text())


def init(model: str, recipe: Path) -> None:
    proc = edgebundle("init", str(MODELS / model), "-o", str(recipe))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {recipe}"
    assert proc.stderr.strip(), "init explains its guesses"


def test_classifier(out_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "digits.toml"
    init("digits_float.tflite", recipe)
    built = build(out_dir, "digits_float.tflite", str(recipe), name="init-digits")
    assert built.manifest["recipe"]["output"]["decoder"] == "classification"
    for digit in (3, 7):
        proc = run_binary(built.path, str(FIXTURES / "digits" / f"sample_{digit}.png"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout)
        assert len(answer["top_k"]) == 5
        assert answer["top_k"][0]["index"] == digit


def test_detection_op(out_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "det.toml"
    init("det_postprocess.tflite", recipe)
    built = build(out_dir, "det_postprocess.tflite", str(recipe), name="init-det")
    assert built.manifest["recipe"]["output"]["decoder"] == "tflite-detection"
    proc = run_binary(built.path, str(FIXTURES / "detection" / "squares.png"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["detections"]
    want = SQUARES["recipes"]["det-postprocess"]["images"]["squares.png"]
    assert [d["index"] for d in got] == [w["class"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["box"] == pytest.approx(w["box"], abs=2.0)
