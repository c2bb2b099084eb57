"""``APP --annotate OUT.png IMAGE`` in a built binary: the detections drawn on the upright image,
written whole; refused (exit 2, one line) by a classifier and for paths it must not write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from edgebundle.runtime.annotate import color
from tests.conftest import FIXTURES
from tests.integration.conftest import Built, build, fixture_recipe, run_binary

pytestmark = pytest.mark.build

DETECTION = FIXTURES / "detection"
SQUARES = json.loads((DETECTION / "squares.json").read_text())


@pytest.fixture(scope="module")
def detector(out_dir: Path) -> Built:
    return build(out_dir, "det_postprocess.tflite", fixture_recipe("det-postprocess"), name="annotate")


@pytest.mark.parametrize("image", ["squares.png", "tall_exif.png"])
def test_annotated_image_has_the_boxes(detector: Built, tmp_path: Path, image: str) -> None:
    out = tmp_path / "out.png"
    proc = run_binary(detector.path, "--annotate", str(out), str(DETECTION / image), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)  # the answer is still printed
    want = SQUARES["recipes"]["det-postprocess"]["images"][image]
    assert [d["label"] for d in answer["detections"]] == [w["color"] for w in want]
    img = Image.open(out)
    assert img.format == "PNG"
    assert list(img.size) == SQUARES["images"][image]["size"]  # upright
    img = img.convert("RGB")
    for det in answer["detections"]:
        x0, y0, x1, y1 = (round(v) for v in det["box"])
        mx, my = (x0 + x1) // 2, (y0 + y1) // 2
        for point in ((x0, my), (x1, my), (mx, y1), (mx, y0)):
            assert img.getpixel(point) == color(det["index"]), (image, det, point)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_classifier_refuses(out_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import FIXTURES as F

    built = build(out_dir, "digits_float.tflite", "digits", name="annotate-digits")
    out = tmp_path / "out.png"
    proc = run_binary(built.path, "--annotate", str(out), str(F / "digits" / "sample_3.png"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().endswith("--annotate draws detections: for detection models only")
    assert len(proc.stderr.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--annotate", "{tmp}", "{image}"], "is a directory"),
        (["--annotate", "{image}", "{image}"], "--annotate names an input or output too"),
        (["--annotate", "{tmp}/a.npz", "--save-outputs", "{tmp}/a.npz", "{image}"], "input or output too"),
        (["--annotate", "{tmp}/a.png", "{image}", "{image}"], "exactly one IMAGE"),
        (["--annotate", "{tmp}/no/such/dir/a.png", "{image}"], "cannot write"),
    ],
)
def test_refused_before_any_work(detector: Built, tmp_path: Path, args: list[str], message: str) -> None:
    image = tmp_path / "in.png"
    image.write_bytes((DETECTION / "squares.png").read_bytes())
    argv = [a.format(tmp=tmp_path, image=image) for a in args]
    proc = run_binary(detector.path, *argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert image.read_bytes() == (DETECTION / "squares.png").read_bytes()
