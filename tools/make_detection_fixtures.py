"""Generate the detection fixtures: small models whose outputs place known boxes (issue #16).

Rerun from the repository root, in the dev-only venv of ``tools/make_fixtures.py``::

    /work/fixture-venv/bin/python tools/make_detection_fixtures.py

No training: every model computes where the pure red, green and blue rectangles of the image are.
Per colour channel c the signal is ``relu(x_c - max(other channels))`` (black, white, grey and
letterbox padding give 0); its column and row profiles (max over the other axis) give each
rectangle's width/height (their sums) and centre (their centroids), which stay exact to a fraction of
a pixel through bilinear resizing. So one model finds at most one box per colour, and moving a
rectangle in the image moves its box. Every anchor (SSD, detection op) or grid cell (YOLO) whose
centre lies inside a rectangle predicts that rectangle's whole box and its colour's score
(red 0.95, green 0.85, blue 0.75); the others score 0 (probability) or -8 (logit). Non-maximum
suppression of these identical boxes leaves one detection per rectangle.

Outputs (all committed; regenerating gives byte-identical files with the pinned versions):

- tests/fixtures/models/det_ssd.tflite: BlazeFace-style, float input [1,128,128,3] in [-1, 1],
  ``regressors`` [1,896,16] (dx, dy, w, h, then 6 keypoints (x, y) relative to the anchor, in input
  pixels: centre, top-left, top-right, bottom-right, bottom-left, top-middle) and ``classificators``
  [1,896,1] (logits), for the anchors of issue #16's example [output.anchors].
- det_postprocess.tflite: uint8 input [1,96,96,3] (scale 1/255), box encodings and class
  predictions for a 12x12 grid of anchors fed to the builtin ``TFLite_Detection_PostProcess`` op
  (boxes [1,10,4], classes [1,10], scores [1,10], count [1]); the op is added to the flatbuffer here.
- det_yolov5.tflite / det_yolov5_int8.tflite: input [1,96,96,3], output [1,144,8] per stride-8 grid
  cell: cx, cy, w, h normalized to the input, objectness, class scores (red, green, blue); the int8
  one has int8 input (scale 1/255, zero point -128) and int8 output (scale 1/255, zero point -128)
  around the same float graph.
- det_yolov8.tflite: input [1,96,128,3] (H=96, W=128), output [1,7,192]: cx, cy, w, h in input
  pixels and three class scores, per stride-8 grid cell, channels first (no objectness).
- tests/fixtures/detection/*.png: the test images, and squares.json: each image's rectangles and,
  per fixture recipe, the detections a decoder must report (boxes in original image pixels).
- tests/fixtures/models/detection.json: the models' tensors, sizes and hashes.
The recipes (tests/fixtures/recipes/det-*.toml) and labels are written by hand.
``tests/unit/test_detection_fixtures.py`` checks the raw outputs against squares.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ["TF_DETERMINISTIC_OPS"] = "1"

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
IMAGES = FIXTURES / "detection"

NpArray = np.ndarray[Any, Any]

COLORS = ("red", "green", "blue")
SCORES = (0.95, 0.85, 0.75)  # the score each colour's detection gets, in every model
YOLO_CLASS_SCORE = 0.96  # v5 class probability; objectness = score / this, so obj * cls = score
EXIF_ORIENTATION = 0x0112

# name: (upright width, height), EXIF orientation to store it with, rectangles as
# (colour, xmin, ymin, xmax, ymax) in pixel edges of the upright image.
TEST_IMAGES: dict[str, tuple[tuple[int, int], int, list[tuple[str, int, int, int, int]]]] = {
    "squares.png": ((256, 256), 1, [
        ("red", 32, 48, 96, 112),
        ("green", 144, 128, 224, 208),
        ("blue", 160, 24, 240, 64),
    ]),
    "wide.png": ((320, 160), 1, [
        ("red", 120, 40, 160, 80),
        ("green", 200, 90, 250, 140),
        ("blue", 8, 56, 48, 104),  # outside a centre crop to a 4:3 or square input
    ]),
    "tall_exif.png": ((160, 240), 6, [
        ("red", 20, 30, 70, 80),  # a centre crop to 4:3 keeps only its lower part (y >= 60)
        ("green", 60, 100, 140, 160),
        ("blue", 30, 190, 120, 225),  # outside that crop
    ]),
}  # fmt: skip

# The recipes of tests/fixtures/recipes/det-*.toml: model, input (height, width), resize mode.
RECIPES: dict[str, tuple[str, tuple[int, int], str]] = {
    "det-ssd": ("det_ssd", (128, 128), "letterbox"),
    "det-postprocess": ("det_postprocess", (96, 96), "stretch"),
    "det-postprocess-auto": ("det_postprocess", (96, 96), "stretch"),
    "det-yolov5": ("det_yolov5", (96, 96), "letterbox"),
    "det-yolov5-int8": ("det_yolov5_int8", (96, 96), "letterbox"),
    "det-yolov8": ("det_yolov8", (96, 128), "center-crop"),
}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --------------------------------------------------------------------------------------------
# images and the detections they must give
# --------------------------------------------------------------------------------------------


def make_images() -> dict[str, Any]:
    IMAGES.mkdir(parents=True, exist_ok=True)
    values = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    meta: dict[str, Any] = {}
    for name, ((width, height), orientation, rects) in TEST_IMAGES.items():
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        for color, x0, y0, x1, y1 in rects:
            pixels[y0:y1, x0:x1] = values[color]
        upright = Image.fromarray(pixels, "RGB")
        if orientation == 1:
            upright.save(IMAGES / name, optimize=False)
        else:
            assert orientation == 6  # displayed rotated 90 degrees clockwise: store it anticlockwise
            exif = Image.Exif()
            exif[EXIF_ORIENTATION] = orientation
            upright.transpose(Image.Transpose.ROTATE_90).save(IMAGES / name, exif=exif, optimize=False)
        meta[name] = {
            "size": [width, height],
            "exif_orientation": orientation,
            "rectangles": [{"color": color, "box": [x0, y0, x1, y1]} for color, x0, y0, x1, y1 in rects],
        }
    return meta


def visible_region(size: tuple[int, int], input_hw: tuple[int, int], resize: str) -> list[float]:
    """The part of the upright image the model sees, in its pixels (the runtime's centre crop)."""
    w, h = size
    height, width = input_hw
    if resize != "center-crop":
        return [0.0, 0.0, float(w), float(h)]
    scale = max(width / w, height / h)
    nw, nh = max(width, math.ceil(w * scale - 1e-6)), max(height, math.ceil(h * scale - 1e-6))
    left, top = (nw - width) // 2, (nh - height) // 2
    return [left * w / nw, top * h / nh, (left + width) * w / nw, (top + height) * h / nh]


def expected_detections() -> dict[str, Any]:
    """Per recipe and image: the rectangles the model sees, as detections sorted by score."""
    out: dict[str, Any] = {}
    for recipe, (model, input_hw, resize) in RECIPES.items():
        per_image: dict[str, Any] = {}
        for name, (size, _, rects) in TEST_IMAGES.items():
            vx0, vy0, vx1, vy1 = visible_region(size, input_hw, resize)
            found = []
            for color, x0, y0, x1, y1 in rects:
                box = [max(x0, vx0), max(y0, vy0), min(x1, vx1), min(y1, vy1)]
                if box[2] - box[0] > 0 and box[3] - box[1] > 0:
                    c = COLORS.index(color)
                    found.append({"color": color, "class": c, "score": SCORES[c], "box": box})
            per_image[name] = sorted(found, key=lambda d: -d["score"])
        out[recipe] = {"model": f"{model}.tflite", "resize": resize, "images": per_image}
    return out


# --------------------------------------------------------------------------------------------
# the graphs (TensorFlow, converted to float TFLite)
# --------------------------------------------------------------------------------------------


def tf_module() -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    return tf


def find_rectangles(tf: Any, x01: Any, height: int, width: int) -> tuple[Any, Any, Any, Any]:
    """[1,H,W,3] in [0,1] -> per colour (cx, cy, w, h) in input pixels, each [1,3] (0 if absent)."""
    r, g, b = tf.unstack(x01, axis=-1)
    signal = tf.nn.relu(tf.stack([r - tf.maximum(g, b), g - tf.maximum(r, b), b - tf.maximum(r, g)], axis=-1))
    cols = tf.reduce_max(signal, axis=1)  # [1,W,3]
    rows = tf.reduce_max(signal, axis=2)  # [1,H,3]
    w = tf.reduce_sum(cols, axis=1)
    h = tf.reduce_sum(rows, axis=1)
    xs = tf.constant((np.arange(width, dtype=np.float32) + 0.5).reshape(1, width, 1))
    ys = tf.constant((np.arange(height, dtype=np.float32) + 0.5).reshape(1, height, 1))
    cx = tf.reduce_sum(cols * xs, axis=1) / tf.maximum(w, 1e-3)
    cy = tf.reduce_sum(rows * ys, axis=1) / tf.maximum(h, 1e-3)
    return cx, cy, w, h


def assign(tf: Any, centers: NpArray, cx: Any, cy: Any, w: Any, h: Any) -> tuple[Any, Any]:
    """For anchor/cell centres [N,2] (x, y px): the one-hot colour each predicts [N,3] (the
    rectangle it lies deepest in) and that depth [N,1] (px, > 0 inside)."""
    ax = tf.constant(centers[:, 0:1].astype(np.float32))
    ay = tf.constant(centers[:, 1:2].astype(np.float32))
    depth = tf.minimum(w * 0.5 - tf.abs(ax - cx), h * 0.5 - tf.abs(ay - cy))  # [N,3]
    onehot = tf.one_hot(tf.argmax(depth, axis=1), 3, dtype=tf.float32)
    return onehot, tf.reduce_max(depth, axis=1, keepdims=True)


def inside(tf: Any, depth: Any) -> Any:
    """1 for an anchor inside its rectangle, 0 outside (a ramp only within 1/1000 px of an edge)."""
    return tf.clip_by_value(depth * 1000.0, 0.0, 1.0)


def grid_centers(height: int, width: int, stride: int) -> NpArray:
    ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
    return (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride


def ssd_anchors() -> NpArray:
    """MediaPipe's SsdAnchorsCalculator for issue #16's example options (fixed_anchor_size, one
    aspect ratio plus the interpolated one): strides 8, 16, 16, 16 on 128x128 -> 16x16x2 + 8x8x6
    anchors, row-major, as normalized (x_center, y_center)."""
    strides = [8, 16, 16, 16]
    anchors: list[tuple[float, float]] = []
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = 2 * (last - layer)  # aspect ratio 1.0 + the interpolated scale, per layer
        cells = math.ceil(128 / strides[layer])
        for y in range(cells):
            for x in range(cells):
                anchors += [((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell
        layer = last
    return np.array(anchors, dtype=np.float64)


def ssd_graph(tf: Any) -> Any:
    centers = ssd_anchors() * 128.0
    logits = np.log(np.array(SCORES) / (1 - np.array(SCORES))).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 128, 128, 3], tf.float32, name="input")])
    def model(x: Any) -> Any:
        cx, cy, w, h = find_rectangles(tf, x * 0.5 + 0.5, 128, 128)
        x0, y0, x1, y1 = cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5
        pairs = [(cx, cy), (w, h), (cx, cy), (x0, y0), (x1, y0), (x1, y1), (x0, y1), (cx, y0)]
        per_color = tf.reshape(tf.stack([v for pair in pairs for v in pair], axis=-1), [3, 16])
        onehot, depth = assign(tf, centers, cx, cy, w, h)
        chosen = tf.reshape(tf.matmul(onehot, per_color), [-1, 8, 2])
        anchor = tf.constant(centers.astype(np.float32).reshape(-1, 1, 2))
        # Only the centre and the keypoints are relative to the anchor; w, h are absolute.
        relative = tf.concat([chosen[:, :1] - anchor, chosen[:, 1:2], chosen[:, 2:] - anchor], axis=1)
        cap = tf.reduce_sum(onehot * logits, axis=1, keepdims=True)
        score = tf.minimum(tf.maximum(depth * 1000.0, -8.0), cap)
        return {
            "regressors": tf.reshape(relative, [1, -1, 16]),
            "classificators": tf.reshape(score, [1, -1, 1]),
        }

    return model


POSTPROCESS_ANCHOR_SIZE = 0.25  # normalized anchor height and width of the detection-op model
POSTPROCESS_SCALES = {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}


def postprocess_anchors() -> NpArray:
    """[144,4] normalized (y_center, x_center, h, w): the cells of a 12x12 grid."""
    xy = grid_centers(96, 96, 8) / 96.0
    size = np.full((len(xy), 1), POSTPROCESS_ANCHOR_SIZE)
    return np.concatenate([xy[:, 1:2], xy[:, 0:1], size, size], axis=1).astype(np.float32)


def postprocess_graph(tf: Any) -> Any:
    """Box encodings and class predictions (background first), the detection op's inputs."""
    centers = grid_centers(96, 96, 8)
    anchors = postprocess_anchors()
    s = POSTPROCESS_SCALES

    @tf.function(input_signature=[tf.TensorSpec([1, 96, 96, 3], tf.float32, name="image")])
    def model(x: Any) -> Any:
        cx, cy, w, h = find_rectangles(tf, x, 96, 96)
        params = tf.reshape(tf.stack([cy / 96, cx / 96, h / 96, w / 96], axis=-1), [3, 4])
        onehot, depth = assign(tf, centers, cx, cy, w, h)
        box = tf.matmul(onehot, params)  # [N,4] normalized y, x, h, w
        a_yx, a_hw = tf.constant(anchors[:, :2]), tf.constant(anchors[:, 2:])
        yx = (box[:, :2] - a_yx) / a_hw * np.array([s["y_scale"], s["x_scale"]], np.float32)
        hw = tf.math.log(tf.maximum(box[:, 2:], 1e-3) / a_hw) * np.array(
            [s["h_scale"], s["w_scale"]], np.float32
        )
        scores = onehot * inside(tf, depth) * np.array(SCORES, np.float32)
        background = 1.0 - tf.reduce_max(scores, axis=1, keepdims=True)
        return {
            "box_encodings": tf.reshape(tf.concat([yx, hw], axis=1), [1, -1, 4]),
            "class_predictions": tf.reshape(tf.concat([background, scores], axis=1), [1, -1, 4]),
        }

    return model


def yolov5_graph(tf: Any) -> Any:
    centers = grid_centers(96, 96, 8)

    @tf.function(input_signature=[tf.TensorSpec([1, 96, 96, 3], tf.float32, name="images")])
    def model(x: Any) -> Any:
        cx, cy, w, h = find_rectangles(tf, x, 96, 96)
        params = tf.reshape(tf.stack([cx, cy, w, h], axis=-1), [3, 4]) / 96.0
        onehot, depth = assign(tf, centers, cx, cy, w, h)
        objectness = tf.reduce_sum(onehot * (np.array(SCORES, np.float32) / YOLO_CLASS_SCORE), axis=1)
        rows = tf.concat(
            [
                tf.matmul(onehot, params),
                inside(tf, depth) * objectness[:, None],
                onehot * YOLO_CLASS_SCORE,
            ],
            axis=1,
        )
        return {"output0": tf.reshape(rows, [1, -1, 8])}

    return model


def yolov8_graph(tf: Any) -> Any:
    centers = grid_centers(96, 128, 8)

    @tf.function(input_signature=[tf.TensorSpec([1, 96, 128, 3], tf.float32, name="images")])
    def model(x: Any) -> Any:
        cx, cy, w, h = find_rectangles(tf, x, 96, 128)
        params = tf.reshape(tf.stack([cx, cy, w, h], axis=-1), [3, 4])
        onehot, depth = assign(tf, centers, cx, cy, w, h)
        scores = onehot * inside(tf, depth) * np.array(SCORES, np.float32)
        rows = tf.concat([tf.matmul(onehot, params), scores], axis=1)  # [N, 7]
        return {"output0": tf.reshape(tf.transpose(rows), [1, 7, -1])}

    return model


def convert(tf: Any, fn: Any) -> bytes:
    module = tf.Module()
    module.model = fn
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], module)
    return bytes(converter.convert())


# --------------------------------------------------------------------------------------------
# flatbuffer surgery: names, quantized I/O, the detection op
# --------------------------------------------------------------------------------------------


class Surgery:
    """Edit a converted model with TensorFlow's own flatbuffer object API."""

    def __init__(self, data: bytes) -> None:
        from tensorflow.lite.python import schema_py_generated as schema
        from tensorflow.lite.tools import flatbuffer_utils

        self.schema = schema
        self.utils = flatbuffer_utils
        self.model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
        (signature,) = self.model.signatureDefs
        # The converter names outputs StatefulPartitionedCall:N; the signature has our keys.
        self.outputs = {m.name.decode(): m.tensorIndex for m in signature.outputs}
        # Our names and I/O replace the signature, which would name stale tensors.
        self.model.signatureDefs = []
        self.graph = self.model.subgraphs[0]

    def to_bytes(self) -> bytes:
        return bytes(self.utils.convert_object_to_bytearray(self.model))

    def tensor(self, index: int) -> Any:
        return self.graph.tensors[index]

    def rename(self, index: int, name: str) -> None:
        self.tensor(index).name = name.encode()

    def opcode(self, builtin: int, custom: str | None = None, version: int = 1) -> int:
        for i, code in enumerate(self.model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and (
                custom is None or code.customCode == custom.encode()
            ):
                return i
        code = self.schema.OperatorCodeT()
        code.builtinCode = builtin
        code.deprecatedBuiltinCode = min(builtin, 127)
        code.customCode = custom
        code.version = version
        self.model.operatorCodes.append(code)
        return len(self.model.operatorCodes) - 1

    def add_tensor(
        self,
        name: str,
        shape: list[int],
        dtype: int,
        data: NpArray | None = None,
        quantization: tuple[float, int] | None = None,
    ) -> int:
        buffer = self.schema.BufferT()
        if data is not None:
            buffer.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
        self.model.buffers.append(buffer)
        tensor = self.schema.TensorT()
        tensor.name = name.encode()
        tensor.shape = np.array(shape, dtype=np.int32)
        tensor.type = dtype
        tensor.buffer = len(self.model.buffers) - 1
        if quantization is not None:
            q = self.schema.QuantizationParametersT()
            q.scale, q.zeroPoint = [quantization[0]], [quantization[1]]
            tensor.quantization = q
        self.graph.tensors.append(tensor)
        return len(self.graph.tensors) - 1

    def add_op(self, opcode: int, inputs: list[int], outputs: list[int], first: bool = False) -> Any:
        op = self.schema.OperatorT()
        op.opcodeIndex = opcode
        op.inputs, op.outputs = inputs, outputs
        if first:
            self.graph.operators.insert(0, op)
        else:
            self.graph.operators.append(op)
        return op

    def quantized_input(self, name: str, dtype: int, scale: float, zero_point: int) -> None:
        """Feed the float input from a new quantized input through DEQUANTIZE."""
        (old,) = self.graph.inputs
        self.rename(old, f"{name}_dequantized")
        shape = list(self.tensor(old).shape)
        new = self.add_tensor(name, shape, dtype, quantization=(scale, zero_point))
        code = self.opcode(self.schema.BuiltinOperator.DEQUANTIZE, version=2)
        self.add_op(code, [new], [old], first=True)
        self.graph.inputs = [new]

    def quantized_outputs(self, dtype: int, scale: float, zero_point: int) -> None:
        """Every float output re-emitted through QUANTIZE under its own name."""
        code = self.opcode(self.schema.BuiltinOperator.QUANTIZE)
        outputs = []
        for old in self.graph.outputs:
            name = self.tensor(old).name.decode()
            self.rename(old, f"{name}_float")
            new = self.add_tensor(name, list(self.tensor(old).shape), dtype, quantization=(scale, zero_point))
            self.add_op(code, [old], [new])
            outputs.append(new)
        self.graph.outputs = outputs


def postprocess_options() -> bytes:
    from flatbuffers import flexbuffers

    options = {
        "max_detections": 10,
        "max_classes_per_detection": 1,
        "detections_per_class": 100,
        "use_regular_nms": False,
        "nms_score_threshold": 0.3,
        "nms_iou_threshold": 0.6,
        "num_classes": 3,
        **POSTPROCESS_SCALES,
    }
    return bytes(flexbuffers.Dumps(options))


def make_ssd(tf: Any) -> bytes:
    s = Surgery(convert(tf, ssd_graph(tf)))
    regressors, scores = s.outputs["regressors"], s.outputs["classificators"]
    s.rename(s.graph.inputs[0], "input")
    s.rename(regressors, "regressors")
    s.rename(scores, "classificators")
    s.graph.outputs = [regressors, scores]
    return s.to_bytes()


def make_postprocess(tf: Any) -> bytes:
    s = Surgery(convert(tf, postprocess_graph(tf)))
    s.rename(s.graph.inputs[0], "normalized_input_image_tensor")
    s.quantized_input("normalized_input_image_tensor", s.schema.TensorType.UINT8, 1 / 255, 0)
    encodings, predictions = s.outputs["box_encodings"], s.outputs["class_predictions"]
    s.rename(encodings, "raw_outputs/box_encodings")
    s.rename(predictions, "raw_outputs/class_predictions")
    anchors = s.add_tensor("anchors", [144, 4], s.schema.TensorType.FLOAT32, data=postprocess_anchors())
    f32 = s.schema.TensorType.FLOAT32
    outs = [
        s.add_tensor("TFLite_Detection_PostProcess", [1, 10, 4], f32),
        s.add_tensor("TFLite_Detection_PostProcess:1", [1, 10], f32),
        s.add_tensor("TFLite_Detection_PostProcess:2", [1, 10], f32),
        s.add_tensor("TFLite_Detection_PostProcess:3", [1], f32),
    ]
    code = s.opcode(s.schema.BuiltinOperator.CUSTOM, custom="TFLite_Detection_PostProcess")
    op = s.add_op(code, [encodings, predictions, anchors], outs)
    op.customOptions = np.frombuffer(postprocess_options(), dtype=np.uint8)
    op.customOptionsFormat = s.schema.CustomOptionsFormat.FLEXBUFFERS
    s.graph.outputs = outs
    return s.to_bytes()


def make_yolo(tf: Any, graph: Any, int8: bool) -> bytes:
    s = Surgery(convert(tf, graph))
    s.rename(s.graph.inputs[0], "images")
    s.rename(s.graph.outputs[0], "output0")
    if int8:
        s.quantized_input("images", s.schema.TensorType.INT8, 1 / 255, -128)
        s.quantized_outputs(s.schema.TensorType.INT8, 1 / 255, -128)
    return s.to_bytes()


# --------------------------------------------------------------------------------------------


def describe(path: Path) -> dict[str, Any]:
    """Load with tflite-runtime (the oldest runtime we support), run on zeros, list the tensors."""
    from tflite_runtime.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    interp.invoke()

    def info(d: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = d["quantization"]
        return {
            "name": d["name"],
            "shape": [int(v) for v in d["shape"]],
            "dtype": np.dtype(d["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
        }

    data = path.read_bytes()
    return {
        "file": rel(path),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "inputs": [info(d) for d in interp.get_input_details()],
        "outputs": [info(d) for d in interp.get_output_details()],
    }


def main() -> int:
    tf = tf_module()
    models = {
        "det_ssd": make_ssd(tf),
        "det_postprocess": make_postprocess(tf),
        "det_yolov5": make_yolo(tf, yolov5_graph(tf), int8=False),
        "det_yolov5_int8": make_yolo(tf, yolov5_graph(tf), int8=True),
        "det_yolov8": make_yolo(tf, yolov8_graph(tf), int8=False),
    }
    for name, data in models.items():
        (MODELS / f"{name}.tflite").write_bytes(data)
    images = make_images()
    squares = {
        "generator": rel(Path(__file__)),
        "scores": dict(zip(COLORS, SCORES, strict=True)),
        "images": images,
        "recipes": expected_detections(),
    }
    (IMAGES / "squares.json").write_text(json.dumps(squares, indent=2) + "\n")

    import tflite_runtime

    meta = {
        "generator": rel(Path(__file__)),
        "versions": {"tensorflow": tf.__version__, "tflite_runtime": tflite_runtime.__version__},
        "models": {name: describe(MODELS / f"{name}.tflite") for name in models},
    }
    (MODELS / "detection.json").write_text(json.dumps(meta, indent=2) + "\n")
    for name, info in meta["models"].items():
        print(f"{name}: {info['size_bytes']} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
