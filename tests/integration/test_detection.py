"""Detection recipes built with the real CLI: the binary's detections on the fixture images are the
rectangles tests/fixtures/detection/squares.json documents, in pixels of the original (upright)
image, through stretch, letterbox and centre crop (issue #16); for the default target (LiteRT's C API,
no NumPy) and x86_64-tflite (tflite-runtime), whose answers are the same."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import FIXTURES, MODELS
from tests.integration.conftest import Built, build, fixture_recipe, run_binary

pytestmark = pytest.mark.build

DETECTION = FIXTURES / "detection"
SQUARES = json.loads((DETECTION / "squares.json").read_text())
RECIPES = SQUARES["recipes"]
MODEL_INFO = json.loads((MODELS / "detection.json").read_text())["models"]
IMAGES = sorted(SQUARES["images"])
BOX_TOL_PX = 2.0  # the models are exact to ~0.3 input pixels; the images are up to 3.3x the input
SCORE_TOL = 0.01


TARGETS = ("x86_64", "x86_64-tflite")


@pytest.fixture(scope="module")
def builds(out_dir: Path) -> Callable[[str, str], Built]:
    """Each recipe built once per target, when first asked for."""
    done: dict[tuple[str, str], Built] = {}

    def get(recipe: str, target: str) -> Built:
        if (recipe, target) not in done:
            name = recipe if target == "x86_64" else f"{recipe}-tflite"
            model = RECIPES[recipe]["model"]
            done[recipe, target] = build(
                out_dir, model, fixture_recipe(recipe), "--target", target, name=name
            )
        return done[recipe, target]

    return get


@pytest.fixture(scope="module", params=[(r, t) for r in sorted(RECIPES) for t in TARGETS], ids="-".join)
def detector(request: pytest.FixtureRequest, builds: Callable[[str, str], Built]) -> tuple[str, Built]:
    recipe, target = request.param
    return recipe, builds(recipe, target)


def detect(built: Built, work: Path, *args: str) -> list[dict[str, Any]]:
    proc = run_binary(built.path, *args, *(str(DETECTION / name) for name in IMAGES), cwd=work)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def keypoints(box: list[float]) -> list[list[float]]:
    """det_ssd's six keypoints: centre, corners clockwise from top-left, top-middle."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return [[cx, cy], [x0, y0], [x1, y0], [x1, y1], [x0, y1], [cx, y0]]


def assert_detections(recipe: str, image: str, got: list[dict[str, Any]], min_score: float = 0.0) -> None:
    want = [d for d in RECIPES[recipe]["images"][image] if d["score"] >= min_score]
    where = f"{recipe} on {image}"
    assert len(got) == len(want), f"{where}: {got}"
    ssd = recipe == "det-ssd"
    for n, (g, w) in enumerate(zip(got, want, strict=True)):  # both sorted by score
        assert g["index"] == (0 if ssd else w["class"]), where
        assert g["label"] == ("square" if ssd else w["color"]), where
        assert g["score"] == pytest.approx(w["score"], abs=SCORE_TOL), where
        assert g["box"] == pytest.approx(w["box"], abs=BOX_TOL_PX), f"{where}, detection {n}"
        if ssd:
            got_points = [v for point in g["keypoints"] for v in point]
            want_points = [v for point in keypoints(w["box"]) for v in point]
            assert got_points == pytest.approx(want_points, abs=BOX_TOL_PX), where


def test_detections_are_the_rectangles(detector: tuple[str, Built], tmp_path: Path) -> None:
    recipe, built = detector
    results = detect(built, tmp_path)
    assert [Path(r["image"]).name for r in results] == IMAGES
    for result in results:
        assert set(result) == {"image", "detections", "latency_ms"}
        assert_detections(recipe, Path(result["image"]).name, result["detections"])


def test_score_threshold_on_the_command_line(detector: tuple[str, Built], tmp_path: Path) -> None:
    recipe, built = detector
    for result in detect(built, tmp_path, "--score-threshold", "0.9"):  # only red (0.95) is left
        assert_detections(recipe, Path(result["image"]).name, result["detections"], min_score=0.9)


def test_batch_answers_the_same(detector: tuple[str, Built], tmp_path: Path) -> None:
    recipe, built = detector
    stdin = "".join(json.dumps({"path": str(DETECTION / name)}) + "\n" for name in IMAGES)
    proc = run_binary(built.path, "--batch", cwd=tmp_path, stdin=stdin, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name, line in zip(IMAGES, proc.stdout.splitlines(), strict=True):
        assert_detections(recipe, name, json.loads(line)["detections"])


def test_save_outputs_still_gives_the_raw_tensors(detector: tuple[str, Built], tmp_path: Path) -> None:
    recipe, built = detector
    out = tmp_path / "raw.npz"
    proc = run_binary(built.path, "--save-outputs", str(out), str(DETECTION / "squares.png"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    outputs = MODEL_INFO[Path(RECIPES[recipe]["model"]).stem]["outputs"]
    with np.load(out) as data:
        assert sorted(data.files) == sorted(o["name"] for o in outputs)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_litert_answers_as_tflite_runtime(
    recipe: str, builds: Callable[[str, str], Built], tmp_path: Path
) -> None:
    """Same detections from both interpreters (LiteRT's kernels round a little differently from
    tflite-runtime's: scores to 1e-5, boxes to 0.01 pixel), and no NumPy in the default binary."""
    lean, tflite = builds(recipe, "x86_64"), builds(recipe, "x86_64-tflite")
    assert lean.manifest["numpy"] == ""
    assert tflite.manifest["numpy"]
    for want, got in zip(detect(tflite, tmp_path), detect(lean, tmp_path), strict=True):
        assert len(got["detections"]) == len(want["detections"]) > 0, (got, want)
        for g, w in zip(got["detections"], want["detections"], strict=True):
            assert (g["index"], g.get("label")) == (w["index"], w.get("label"))
            assert g["score"] == pytest.approx(w["score"], abs=1e-5)
            assert g["box"] == pytest.approx(w["box"], abs=0.01)
            points = [[v for point in d.get("keypoints", []) for v in point] for d in (g, w)]
            assert points[0] == pytest.approx(points[1], abs=0.01)
