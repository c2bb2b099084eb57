"""The detection fixtures, proven independently of any decoder: each model, run in-process by
tflite-runtime, puts the boxes that tests/fixtures/detection/squares.json documents into its raw
outputs (tools/make_detection_fixtures.py says how the models are built)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgebundle.runtime.preprocess import decode, to_tensor
from tests.conftest import FIXTURES, MODELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NpArray = np.ndarray[Any, Any]
DETECTION = FIXTURES / "detection"
SQUARES = json.loads((DETECTION / "squares.json").read_text())
RECIPES = SQUARES["recipes"]
COLORS = ("red", "green", "blue")


def interpreter(model: str) -> Any:
    from tflite_runtime.interpreter import Interpreter

    interp = Interpreter(model_path=str(MODELS / model), num_threads=1)
    interp.allocate_tensors()
    return interp


def input_spec(recipe: str) -> dict[str, Any]:
    table = tomllib.loads((FIXTURES / "recipes" / f"{recipe}.toml").read_text())["input"]
    return {
        "color": table["color"],
        "resize": table["resize"],
        "interpolation": "bilinear",
        "mean": [float(table["mean"])],
        "std": [float(table["std"])],
        "layout": None,
        "pad_value": float(table.get("pad_value", 0)),
    }


def run(model: str, image: Image.Image, spec: dict[str, Any]) -> tuple[dict[str, NpArray], int, int]:
    """Raw outputs (dequantized) by tensor name, and the input's height and width."""
    interp = interpreter(model)
    (detail,) = interp.get_input_details()
    scale, zero_point = detail["quantization"]
    tensor = {
        "shape": [int(d) for d in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": scale,
        "zero_point": zero_point,
    }
    value = to_tensor(image, spec, tensor)  # type: ignore[arg-type]
    interp.set_tensor(detail["index"], np.frombuffer(bytearray(value.data), value.dtype).reshape(value.shape))
    interp.invoke()
    outputs = {}
    for d in interp.get_output_details():
        value = interp.get_tensor(d["index"])
        scale, zero_point = d["quantization"]
        outputs[d["name"]] = (value.astype(np.float64) - zero_point) * scale if scale else value
    return outputs, tensor["shape"][1], tensor["shape"][2]


def ssd_anchor_centers() -> NpArray:
    """BlazeFace's 896 anchors (issue #16's example options), (x, y) in pixels of the 128x128
    input: a 16x16 grid with 2 anchors per cell, then an 8x8 grid with 6 per cell, row-major."""
    centers = [
        ((x + 0.5) * stride, (y + 0.5) * stride)
        for stride, per_cell in ((8, 2), (16, 6))
        for y in range(128 // stride)
        for x in range(128 // stride)
        for _ in range(per_cell)
    ]
    return np.array(centers)


Row = tuple[int, float, NpArray]  # class, score, box [xmin, ymin, xmax, ymax] in input pixels


def confident_rows(model: str, out: dict[str, NpArray], height: int, width: int) -> list[Row]:
    """Every row of the raw outputs scoring >= 0.5, each decoded from its own layout."""
    if model == "det_ssd.tflite":
        reg, logits = out["regressors"][0], out["classificators"][0, :, 0]
        centers = reg[:, :2] + ssd_anchor_centers()
        boxes = np.concatenate([centers - reg[:, 2:4] / 2, centers + reg[:, 2:4] / 2], axis=1)
        scores, classes = 1 / (1 + np.exp(-logits)), np.zeros(len(logits), dtype=int)
    elif model == "det_postprocess.tflite":
        n = int(out["TFLite_Detection_PostProcess:3"][0])
        yx = out["TFLite_Detection_PostProcess"][0, :n] * [height, width, height, width]
        boxes = yx[:, [1, 0, 3, 2]]
        classes = out["TFLite_Detection_PostProcess:1"][0, :n].astype(int)
        scores = out["TFLite_Detection_PostProcess:2"][0, :n]
    else:
        rows = out["output0"][0]
        if model == "det_yolov8.tflite":  # [4+C, N], pixels, no objectness
            rows, size, objectness = rows.T, [1, 1], 1.0
        else:  # [N, 5+C], normalized
            size, objectness = [width, height], rows[:, 4]
            rows = np.delete(rows, 4, axis=1)
        class_scores = rows[:, 4:] * np.asarray(objectness).reshape(-1, 1)
        classes, scores = class_scores.argmax(axis=1), class_scores.max(axis=1)
        cx, cy, w, h = (rows[:, i] * size[i % 2] for i in range(4))
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keep = scores >= 0.5
    return list(zip(classes[keep], scores[keep], boxes[keep], strict=True))


def to_input(box: list[float], size: list[int], height: int, width: int, resize: str) -> NpArray:
    """An upright-image box in input-tensor pixels, through the runtime's resize geometry."""
    w, h = size
    if resize == "stretch":
        sx, sy, dx, dy = width / w, height / h, 0.0, 0.0
    elif resize == "letterbox":
        scale = min(width / w, height / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        sx, sy, dx, dy = nw / w, nh / h, (width - nw) // 2, (height - nh) // 2
    else:  # center-crop
        scale = max(width / w, height / h)
        nw, nh = max(width, math.ceil(w * scale - 1e-6)), max(height, math.ceil(h * scale - 1e-6))
        sx, sy, dx, dy = nw / w, nh / h, -((nw - width) // 2), -((nh - height) // 2)
    x0, y0, x1, y1 = box
    mapped = np.array([x0 * sx + dx, y0 * sy + dy, x1 * sx + dx, y1 * sy + dy])
    return np.clip(mapped, 0, [width, height, width, height])


def check_rows(rows: list[Row], want: list[tuple[int, float, NpArray]], box_tol: float) -> None:
    """Each wanted box predicted by >= 1 confident row, at its score; no other confident row."""
    best = [0.0] * len(want)
    for cls, score, box in rows:
        hits = [i for i, (c, _, b) in enumerate(want) if c == cls and np.abs(box - b).max() <= box_tol]
        assert hits, f"row of class {cls}, score {score:.3f}, box {np.round(box, 2)} matches no wanted box"
        best[hits[0]] = max(best[hits[0]], float(score))
    for (cls, score, box), got in zip(want, best, strict=True):
        assert got == pytest.approx(score, abs=0.01), f"class {cls} box {box}: best score {got}"


ONE_PER_MODEL = [r for r in RECIPES if r != "det-postprocess-auto"]  # the same model as det-postprocess
CASES = [(recipe, image) for recipe in ONE_PER_MODEL for image in SQUARES["images"]]


@pytest.mark.parametrize(("recipe", "image"), CASES, ids=[f"{r}-{i}" for r, i in CASES])
def test_raw_outputs_box_the_documented_rectangles(recipe: str, image: str) -> None:
    model, resize = RECIPES[recipe]["model"], RECIPES[recipe]["resize"]
    spec = input_spec(recipe)
    assert spec["resize"] == resize
    out, height, width = run(model, decode(str(DETECTION / image)), spec)
    size = SQUARES["images"][image]["size"]
    ssd = model == "det_ssd.tflite"  # one class
    want = [
        (0 if ssd else d["class"], d["score"], to_input(d["box"], size, height, width, resize))
        for d in RECIPES[recipe]["images"][image]
    ]
    assert want, "every image shows at least one rectangle to every model"
    # Through resizing too, boxes come out within 0.3 input pixels (int8 included).
    check_rows(confident_rows(model, out, height, width), want, box_tol=0.3)


@pytest.mark.parametrize("recipe", ONE_PER_MODEL)
@pytest.mark.parametrize("where", [(0.1, 0.2), (0.5, 0.45), (0.7, 0.6)])
def test_moving_a_rectangle_moves_its_box(recipe: str, where: tuple[float, float]) -> None:
    model = RECIPES[recipe]["model"]
    (detail,) = interpreter(model).get_input_details()
    height, width = int(detail["shape"][1]), int(detail["shape"][2])
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0 = round(where[0] * width), round(where[1] * height)
    x1, y1 = x0 + width // 4, y0 + height // 5
    pixels[y0:y1, x0:x1] = (0, 255, 0)  # green: the middle score
    # An image of the input's own size is not resized: the box is exact, up to the int8 output's
    # steps of 1/255 of the input size (cx and w each rounded: up to 0.29 px on 96).
    out, _, _ = run(model, Image.fromarray(pixels, "RGB"), input_spec(recipe))
    rows = confident_rows(model, out, height, width)
    cls = 0 if model == "det_ssd.tflite" else 1
    tol = 0.3 if "int8" in model else 0.01
    check_rows(rows, [(cls, 0.85, np.array([x0, y0, x1, y1], dtype=float))], box_tol=tol)


def test_ssd_keypoints_are_the_box_centre_corners_and_top_middle() -> None:
    out, _, _ = run("det_ssd.tflite", decode(str(DETECTION / "squares.png")), input_spec("det-ssd"))
    reg, logits = out["regressors"][0], out["classificators"][0, :, 0]
    anchors = ssd_anchor_centers()
    for i in np.flatnonzero(logits > 0):
        cx, cy = reg[i, :2] + anchors[i]
        w, h = reg[i, 2:4]
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        want = [(cx, cy), (x0, y0), (x1, y0), (x1, y1), (x0, y1), (cx, y0)]
        np.testing.assert_allclose(reg[i, 4:].reshape(6, 2) + anchors[i], want, atol=1e-3)


def test_detection_op_model_uses_the_builtin_op() -> None:
    data = (MODELS / "det_postprocess.tflite").read_bytes()
    assert b"TFLite_Detection_PostProcess" in data
    names = [d["name"] for d in interpreter("det_postprocess.tflite").get_output_details()]
    op = "TFLite_Detection_PostProcess"
    assert names == [op, f"{op}:1", f"{op}:2", f"{op}:3"]


def test_documented_models_match_the_files() -> None:
    recorded = json.loads((MODELS / "detection.json").read_text())["models"]
    assert sorted(f"{name}.tflite" for name in recorded) == sorted({r["model"] for r in RECIPES.values()})
    for name, info in recorded.items():
        path = Path(info["file"])
        assert path.name == f"{name}.tflite"
        assert (MODELS / path.name).stat().st_size == info["size_bytes"]
        assert info["size_bytes"] < 32_000
