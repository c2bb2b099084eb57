"""A detection recipe built into a real binary: its answers (CLI, --batch, --serve) against the
independent reference decoder of tests/unit/test_detection.py run on the binary's own raw outputs,
mapped back through the letterbox by hand.

There is no real detector among the fixtures: tests/fixtures/recipes/detect-ssd.toml reads
multi_out.tflite's [1, 4, 4, 8] output as a tiny SSD (16 boxes with 2 keypoints, 8 classes). The
decoders' correctness is the unit tests' job; this proves the wiring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.conftest import IMAGES
from tests.integration.conftest import Built, build, fixture_recipe, run_binary
from tests.unit.test_detection import ref_anchors, ref_nms, ref_tensors_to_detections

pytestmark = pytest.mark.build

BOXES = "StatefulPartitionedCall:0"
IMAGE_FILES = [IMAGES / "rgb.jpg", IMAGES / "exif_rotated.jpg"]


@pytest.fixture(scope="module")
def detector(out_dir: Path) -> Built:
    return build(out_dir, "multi_out.tflite", fixture_recipe("detect-ssd"), name="detect-ssd")


def expected(built: Built, image: Path, work: Path, threshold: float | None = None) -> list[dict[str, Any]]:
    """The reference decoder on the binary's raw outputs, mapped through a letterbox computed here."""
    out = work / "raw.npz"
    proc = run_binary(built.path, "--save-outputs", str(out), str(image), cwd=work)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        raw = data[BOXES]
    spec = built.manifest["recipe"]["output"]
    det = spec["detections"]
    thresh = det["min_score_thresh"] if threshold is None else threshold
    found = ref_nms(
        ref_tensors_to_detections(raw, raw, ref_anchors(spec["anchors"]), det, thresh), spec["nms"]
    )
    with Image.open(image) as img:
        w, h = ImageOps.exif_transpose(img).size
    scale = min(16 / w, 16 / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    left, top = (16 - nw) // 2, (16 - nh) // 2

    def point(x: float, y: float) -> list[float]:
        return [min(max((x * 16 - left) * w / nw, 0), w), min(max((y * 16 - top) * h / nh, 0), h)]

    answer = []
    for d in sorted(found, key=lambda d: -d["score"]):
        x0, y0, x1, y1 = d["box"]
        answer.append(
            {
                "index": d["class"],
                "label": ["zero", "one", "two", "three", "four", "five", "six", "seven"][d["class"]],
                "score": d["score"],
                "box": point(x0, y0) + point(x1, y1),
                "keypoints": [point(x, y) for x, y in d["keypoints"]],
                "size": (w, h),
            }
        )
    return answer


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, e in zip(got, want, strict=True):
        assert (g["index"], g["label"]) == (e["index"], e["label"])
        assert g["score"] == pytest.approx(e["score"], abs=2e-6)
        assert g["box"] == pytest.approx(e["box"], abs=0.011)
        np.testing.assert_allclose(g["keypoints"], e["keypoints"], atol=0.011)
        w, h = e["size"]
        assert 0 <= g["box"][0] <= g["box"][2] <= w
        assert 0 <= g["box"][1] <= g["box"][3] <= h


@pytest.mark.parametrize("image", IMAGE_FILES, ids=lambda p: p.name)
def test_cli_answers_detections_in_the_original_image(detector: Built, image: Path, tmp_path: Path) -> None:
    proc = run_binary(detector.path, str(image), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert list(result) == ["image", "detections", "latency_ms"]
    want = expected(detector, image, tmp_path)
    assert want, "the recipe should find something in the fixture images"
    assert_same(result["detections"], want)


def test_score_threshold_overrides_the_recipe(detector: Built, tmp_path: Path) -> None:
    image = IMAGE_FILES[0]
    everything = expected(detector, image, tmp_path, threshold=0.0)
    high = sorted(d["score"] for d in everything)[-3]  # keeps the best 3 (fewer after NMS merges)
    proc = run_binary(detector.path, "--score-threshold", str(high), str(image), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["detections"]
    assert_same(got, expected(detector, image, tmp_path, threshold=high))
    assert all(d["score"] >= high - 1e-6 for d in got)
    # --batch: the same answers, the option for every request
    request = json.dumps({"path": str(image), "id": 1}) + "\n"
    proc2 = run_binary(
        detector.path, "--batch", "--score-threshold", str(high), cwd=tmp_path, stdin=request * 2, timeout=120
    )
    assert proc2.returncode == 0, proc2.stderr
    for line in proc2.stdout.splitlines():
        answer = json.loads(line)
        assert answer["id"] == 1
        assert answer["detections"] == got


def test_serve_takes_score_threshold_per_request(detector: Built, tmp_path: Path) -> None:
    from tests.integration.test_serve import Served

    image = IMAGE_FILES[1]
    cli = json.loads(run_binary(detector.path, str(image), cwd=tmp_path).stdout)["detections"]
    strict = json.loads(
        run_binary(detector.path, "--score-threshold", "0.8756", str(image), cwd=tmp_path).stdout
    )
    server = Served(detector.path, tmp_path)
    try:
        status, body = server.infer(image.read_bytes())
        assert status == 200
        assert body["detections"] == cli
        status, _, raw = server.request("POST", "/v1/infer?score_threshold=0.8756", image.read_bytes())
        assert status == 200
        assert json.loads(raw)["detections"] == strict["detections"]
        status, _, raw = server.request("POST", "/v1/infer?score_threshold=high", image.read_bytes())
        assert status == 400
        assert json.loads(raw)["error"] == "bad_request"
    finally:
        assert server.stop() == 0


def test_save_outputs_still_gives_the_raw_tensors(detector: Built, tmp_path: Path) -> None:
    out = tmp_path / "o.npz"
    proc = run_binary(detector.path, "--save-outputs", str(out), str(IMAGE_FILES[0]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        assert data[BOXES].shape == (1, 4, 4, 8)
    assert "detections" in json.loads(proc.stdout)


def test_classifiers_refuse_a_score_threshold(digits_float: Built, tmp_path: Path) -> None:
    proc = run_binary(digits_float.path, "--score-threshold", "0.5", str(IMAGE_FILES[0]), cwd=tmp_path)
    assert proc.returncode == 2
    assert "--score-threshold takes a number, for detection models only" in proc.stderr
