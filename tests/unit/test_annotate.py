"""The binary's --annotate drawing (runtime/annotate.py) on the detection fixtures: outlines on the
box edges, in the class's colour, on the upright image."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from edgebundle.runtime.annotate import annotate, color, line_width, save
from tests.conftest import FIXTURES

DETECTION = FIXTURES / "detection"
SQUARES = json.loads((DETECTION / "squares.json").read_text())


def detections(image: str) -> list[dict[str, Any]]:
    want = SQUARES["recipes"]["det-postprocess"]["images"][image]
    return [{"index": w["class"], "label": w["color"], "score": w["score"], "box": w["box"]} for w in want]


def assert_outlines(img: Image.Image, dets: list[dict[str, Any]]) -> None:
    for det in dets:
        x0, y0, x1, y1 = det["box"]
        rgb = color(det["index"])
        mx, my = (x0 + x1) // 2, (y0 + y1) // 2
        for point in ((x0, my), (x1, my), (mx, y1), (mx, y0), (x0 + 1, my), (x1 - 1, my)):
            assert img.getpixel(point) == rgb, (det, point)
        assert img.getpixel((mx, my)) != rgb  # an outline, not a filled box


@pytest.mark.parametrize("image", ["squares.png", "tall_exif.png"])
def test_boxes_are_drawn_on_their_edges(image: str) -> None:
    dets = detections(image)
    img = annotate(str(DETECTION / image), dets)
    assert list(img.size) == SQUARES["images"][image]["size"]  # upright (EXIF orientation applied)
    assert_outlines(img, dets)


def test_labels_scores_and_keypoints() -> None:
    dets = detections("squares.png")
    dets[0]["keypoints"] = [[64.0, 80.0]]
    img = annotate(str(DETECTION / "squares.png"), dets)
    assert img.getpixel((64, 80)) == color(0)
    # the label's background above the box, in the class's colour, with white text in it
    label = img.crop((32, 48 - 14, 80, 47))
    colors = {c for _, c in label.getcolors(10_000) or []}
    assert color(0) in colors
    assert (255, 255, 255) in colors


def test_box_on_the_image_edge_is_clipped() -> None:
    dets = [{"index": 3, "score": 0.5, "box": [0.0, 0.0, 256.0, 256.0]}]
    img = annotate(str(DETECTION / "squares.png"), dets)
    assert img.getpixel((255, 128)) == color(3)
    assert img.getpixel((128, 255)) == color(3)
    assert line_width(img.size) == 2


@pytest.mark.parametrize(("name", "fmt"), [("out.png", "PNG"), ("out.JPG", "JPEG"), ("out", "PNG")])
def test_format_from_the_name(name: str, fmt: str) -> None:
    buf = io.BytesIO()
    save(Image.new("RGB", (4, 4)), buf, name)
    buf.seek(0)
    assert Image.open(buf).format == fmt
