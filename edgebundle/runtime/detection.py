"""Detection decoders: raw output tensors -> boxes, scores, classes (and keypoints) in the original
image's pixels. Imported only when the recipe's decoder is ``ssd``, ``yolo`` or ``tflite-detection``,
so classification binaries never load it.

- ``ssd``: MediaPipe's TensorsToDetectionsCalculator (box decoding against SsdAnchorsCalculator's
  anchors, sigmoid/clipped scores, allowed classes, ``min_score_thresh``, ``max_results``) followed by
  its NonMaxSuppressionCalculator (default or weighted, jaccard / modified-jaccard / IoU overlap).
- ``yolo``: Ultralytics' ``non_max_suppression`` (best class only): v5 ``[1, N, 5+C]`` scores are
  objectness x class, v8 ``[1, 4+C, N]`` class scores; kept when ``> score_threshold``; greedy NMS by
  IoU (``> iou_threshold`` suppresses), per class unless ``class_agnostic``; ``max_detections``.
- ``tflite-detection``: the outputs of the ``TFLite_Detection_PostProcess`` op (already suppressed):
  the first ``count`` rows, filtered as MediaPipe does for models with the op.

Every decoder yields boxes relative to the model input (0..1); ``Detector.answer`` maps them through
the recipe's resize back to the original image and clips them to it.

Plain Python, no NumPy, in float32 arithmetic as the model's outputs (floats.py). A frame has
thousands of boxes (YOLOv8's 8400 x 80 scores) of which a handful pass the threshold: the scores are
screened first (``floats.screen``), and only what may pass becomes Python numbers. The NMS is nms.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .anchors import ssd_anchors
from .floats import (
    Real,
    add,
    any_row,
    argmax,
    maybe_large,
    mul,
    positions,
    real,
    scaled,
    screen,
    sub,
)
from .geometry import Frame
from .nms import Box, Detections, Point, greedy, nms_mediapipe
from .postprocess import by_score
from .tensors import Tensor, f32, f32s

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .manifest import TensorSpec

# Ultralytics' non_max_suppression keeps at most this many candidates (the best) before NMS.
YOLO_MAX_NMS = 30000


# --- SSD: MediaPipe's TensorsToDetectionsCalculator ------------------------------------------------


def anchor_array(options: dict[str, Any]) -> list[Box]:
    """x_center, y_center, w, h per anchor, in float32."""
    flat = f32s([v for anchor in ssd_anchors(options) for v in anchor])
    return [(flat[i], flat[i + 1], flat[i + 2], flat[i + 3]) for i in range(0, len(flat), 4)]


def _exp(x: float) -> float:
    return math.inf if x > 709.0 else math.exp(x)  # past it, math.exp raises (NaN stays NaN)


def _score_function(
    opts: dict[str, Any],
) -> tuple[Callable[[list[float]], list[float]], Callable[[float], float]]:
    """Raw scores -> the scores (clipped, sigmoid) in float32, and a score bound -> the raw bound that
    screens for it (loose: the comparison after the screen is exact)."""
    if not opts["sigmoid_score"]:
        return (lambda xs: xs), (lambda bound: bound)
    limit = opts["score_clipping_thresh"]
    hi = math.inf if limit is None else f32(limit)

    def sigmoid(xs: list[float]) -> list[float]:
        if hi < math.inf:  # NumPy's clip: NaN stays NaN
            xs = [x if -hi <= x <= hi or math.isnan(x) else (hi if x > hi else -hi) for x in xs]
        return f32s([1 / e for e in f32s([1 + e for e in f32s([_exp(-x) for x in xs])])])

    def raw_bound(bound: float) -> float:
        raw = _logit_bound(bound)
        return -math.inf if raw <= -hi else min(raw, hi)

    return sigmoid, raw_bound


def _logit_bound(bound: float) -> float:
    """A raw x under which the float32 sigmoid stays under ``bound``: its rounding (and exp's) moves
    it by far less than 2**-22."""
    low = min(bound, 1.0) - 2.0**-22
    return math.log(low / (1 - low)) - 1e-6 if low > 0 else -math.inf


def _on_anchor(v: list[float], scale: float, size: list[float], centre: list[float]) -> list[float]:
    """v / scale * size + centre, in float32."""
    return add(mul(scaled(v, scale), size), centre)


def decode_ssd(
    raw_boxes: Real, raw_scores: Real, anchors: list[Box], opts: dict[str, Any], min_score: float | None
) -> Detections:
    """Boxes and scores of the boxes that pass, in box order (before NMS), as MediaPipe decodes them."""
    n, coords, k = opts["num_boxes"], opts["num_coords"], opts["num_classes"]
    scores_of, raw_bound = _score_function(opts)
    allowed = _allowed_classes(opts, k)
    counted = list(range(k)) if allowed is None else allowed
    threshold = -math.inf if min_score is None else f32(min_score)
    if min_score is None:
        candidates: list[int] = list(range(n))
    else:
        flags = screen(raw_scores, 0, 1, n * k, raw_bound(threshold))  # a class that may pass
        candidates = list(dict.fromkeys(p // k for p in positions(flags)))
    m = len(counted)
    every = scores_of([raw_scores[i * k + j] for i in candidates for j in counted])
    index, scores, classes = [], [], []
    for c, i in enumerate(candidates):
        row = every[c * m : c * m + m]
        if not row:  # every class ignored: no detection
            continue
        j = argmax(row)
        if -math.inf < row[j] < math.inf and row[j] >= threshold:
            index.append(i)
            scores.append(row[j])
            classes.append(counted[j])
    offset = opts["box_coord_offset"]
    b0, b1, b2, b3 = ([raw_boxes[i * coords + offset + c] for i in index] for c in range(4))
    fmt = opts["box_format"]
    if fmt == "yxhw":
        yc, xc, h, w = b0, b1, b2, b3
    elif fmt == "xywh":
        xc, yc, w, h = b0, b1, b2, b3
    else:  # xyxy: distances to the anchor's centre, as MediaPipe reads them
        xc, yc = scaled(sub(b2, b0), 2), scaled(sub(b3, b1), 2)
        w, h = add(b2, b0), add(b3, b1)
    ax, ay, aw, ah = ([anchors[i][c] for i in index] for c in range(4))
    xc = _on_anchor(xc, f32(opts["x_scale"]), aw, ax)
    yc = _on_anchor(yc, f32(opts["y_scale"]), ah, ay)
    h, w = scaled(h, f32(opts["h_scale"])), scaled(w, f32(opts["w_scale"]))
    if opts["apply_exponential_on_box_size"]:
        h, w = f32s([_exp(v) for v in h]), f32s([_exp(v) for v in w])
    h, w = mul(h, ah), mul(w, aw)
    half_w, half_h = scaled(w, 2), scaled(h, 2)
    x0, y0, x1, y1 = sub(xc, half_w), sub(yc, half_h), add(xc, half_w), add(yc, half_h)
    # a negative size (or NaN) is no detection; of the rest the first max_results, in box order
    kept = [p for p, (dx, dy) in enumerate(zip(sub(x1, x0), sub(y1, y0), strict=True)) if dx >= 0 and dy >= 0]
    if opts["max_results"] > 0:
        kept = kept[: opts["max_results"]]
    boxes = [(x0[p], y0[p], x1[p], y1[p]) for p in kept]
    keypoints = None
    if opts["num_keypoints"]:
        keypoints = _keypoints(raw_boxes, [index[p] for p in kept], anchors, opts)
    out = Detections(boxes, [scores[p] for p in kept], [classes[p] for p in kept], keypoints)
    return _flip(out) if opts["flip_vertically"] else out


def _keypoints(raw: Real, index: list[int], anchors: list[Box], opts: dict[str, Any]) -> list[list[Point]]:
    coords, step = opts["num_coords"], opts["num_values_per_keypoint"]
    ax, ay, aw, ah = ([anchors[i][c] for i in index] for c in range(4))
    xs, ys = f32(opts["x_scale"]), f32(opts["y_scale"])
    per_point = []
    for p in range(opts["num_keypoints"]):
        start = opts["keypoint_coord_offset"] + p * step
        a = [raw[i * coords + start] for i in index]
        b = [raw[i * coords + start + 1] for i in index]
        kx, ky = (b, a) if opts["box_format"] == "yxhw" else (a, b)
        per_point.append(list(zip(_on_anchor(kx, xs, aw, ax), _on_anchor(ky, ys, ah, ay), strict=True)))
    return [list(points) for points in zip(*per_point, strict=True)] if per_point else []


def _allowed_classes(opts: dict[str, Any], count: int) -> list[int] | None:
    """The classes that count, in order, or None for all of them."""
    if opts["allow_classes"]:
        allow = set(opts["allow_classes"])
        return [c for c in range(count) if c in allow]
    if opts["ignore_classes"]:
        ignore = set(opts["ignore_classes"])
        return [c for c in range(count) if c not in ignore]
    return None


def _flip(d: Detections) -> Detections:
    top, bottom = f32s([1 - b[3] for b in d.boxes]), f32s([1 - b[1] for b in d.boxes])
    boxes = [(b[0], y0, b[2], y1) for b, y0, y1 in zip(d.boxes, top, bottom, strict=True)]
    kp = None
    if d.keypoints is not None:
        kp = [
            list(zip([x for x, _ in kps], f32s([1 - y for _, y in kps]), strict=True)) for kps in d.keypoints
        ]
    return Detections(boxes, d.scores, d.classes, kp)


# --- YOLO: Ultralytics' non_max_suppression -------------------------------------------------------


def decode_yolo(
    pred: Real,
    shape: tuple[int, int],
    opts: dict[str, Any],
    input_w: int,
    input_h: int,
    score_threshold: float,
) -> Detections:
    """``pred`` of ``shape`` (its last two axes): v8 ``[4+C, N]``, v5 ``[N, 5+C]``."""
    thr = f32(score_threshold)
    xywh: list[Box] = []
    scores: list[float] = []
    classes: list[int] = []
    if opts["layout"] == "v8":
        width, n = shape
        count = width - 4
        flags = screen(pred, 4 * n, 1, count * n, thr)  # [class, candidate]: may pass
        if flags.count(1) <= n:  # few: their candidates from their positions
            candidates = sorted({p % n for p in positions(flags)})
        else:  # many: any class of each candidate, the rows as integers
            candidates = positions(any_row(flags, count, n))
        for i in candidates:
            conf = pred[4 * n + i : width * n : n]
            _take(conf, thr, (pred[i], pred[n + i], pred[2 * n + i], pred[3 * n + i]), xywh, scores, classes)
        runs = [(0, 1, 4 * n)]
    else:
        n, width = shape
        for i in positions(screen(pred, 4, width, n, thr)):
            row = pred[i * width : (i + 1) * width]
            if not row[4] > thr:
                continue
            conf = [f32(s * row[4]) for s in row[5:]]
            _take(conf, thr, (row[0], row[1], row[2], row[3]), xywh, scores, classes)
        runs = [(c, width, n) for c in range(4)]
    boxes = []
    for x, y, w, h in xywh:
        hw, hh = f32(w / 2), f32(h / 2)
        boxes.append((f32(x - hw), f32(y - hh), f32(x + hw), f32(y + hh)))
    kept = greedy(
        boxes,
        by_score(scores)[:YOLO_MAX_NMS],
        opts["iou_threshold"],
        "intersection-over-union",
        None if opts["class_agnostic"] else classes,
        opts["max_detections"],
    )
    boxes = [boxes[i] for i in kept]
    if kept and not _normalized(pred, runs, opts["boxes"]):
        sx, sy = f32(input_w), f32(input_h)
        boxes = [(f32(a / sx), f32(b / sy), f32(c / sx), f32(d / sy)) for a, b, c, d in boxes]
    return Detections(boxes, [scores[i] for i in kept], [classes[i] for i in kept], None)


def _take(
    conf: Sequence[float], thr: float, xywh: Box, boxes: list[Box], scores: list[float], classes: list[int]
) -> None:
    """Ultralytics' best class of one candidate, kept when its score is over ``thr``."""
    j = argmax(conf) if len(conf) else 0
    best = conf[j] if len(conf) else 0.0
    if best > thr:
        boxes.append(xywh)
        scores.append(best)
        classes.append(j)


def _normalized(pred: Real, boxes: list[tuple[int, int, int]], mode: str) -> bool:
    """Whether the x, y, w, h values (``(start, step, count)`` runs of ``pred``) are relative to the
    input. Exports that normalise (Ultralytics' TFLite) give centres and sizes within 0..1 (a little
    past it at the edges); pixel boxes of any real input reach far beyond. NaN: not normalised."""
    if mode != "auto":
        return mode == "normalized"
    for start, step, count in boxes:  # only the values of magnitude 2 and more (or NaN) are read
        if not all(-2.0 <= pred[i] <= 2.0 for i in maybe_large(pred, start, step, count)):
            return False
    return True


# --- TFLite_Detection_PostProcess -----------------------------------------------------------------


def decode_postprocess(
    boxes: Real, classes: Real, scores: Real, count: Real, opts: dict[str, Any], min_score: float | None
) -> Detections:
    """The op's boxes ([ymin, xmin, ymax, xmax], relative), classes, scores and count: the first
    ``count`` rows that pass the class filter, the threshold and a non-negative size."""
    total = count[0]
    n = max(0, min(int(total) if math.isfinite(total) else 0, len(boxes) // 4))
    cls = [int(c) if math.isfinite(c) else -1 for c in classes[:n]]  # float ids truncated, as MediaPipe
    allowed = _allowed_classes(opts, max(cls) + 1 if n else 0)
    wanted = None if allowed is None else set(allowed)
    floor = None if min_score is None else f32(min_score)
    out = Detections([], [], [], None)
    for i in range(n):
        score = scores[i]
        if (wanted is not None and cls[i] not in wanted) or (floor is not None and not score >= floor):
            continue
        ymin, xmin, ymax, xmax = boxes[4 * i : 4 * i + 4]
        if not (f32(xmax - xmin) >= 0 and f32(ymax - ymin) >= 0):
            continue
        out.boxes.append((xmin, ymin, xmax, ymax))
        out.scores.append(score)
        out.classes.append(cls[i])
        if len(out.scores) == opts["max_results"]:
            break
    return out


# --- the session's decoder ------------------------------------------------------------------------


class Detector:
    """The recipe's decoder for one session: tensor indices and anchors resolved once."""

    def __init__(
        self, spec: dict[str, Any], outputs: list[TensorSpec], input_size: tuple[int, int], labels: Any
    ) -> None:
        self.kind: str = spec["decoder"]
        self.spec = spec
        self.outputs = outputs
        self.input_w, self.input_h = input_size
        self.labels: list[str] | None = labels
        names = [t["name"] for t in outputs]
        if self.kind == "ssd":
            det = spec["detections"]
            self.tensors = [names.index(det["boxes"]), names.index(det["scores"])]
            self.anchors = anchor_array(spec["anchors"])
        elif self.kind == "yolo":
            self.tensors = [names.index(spec["tensor"]) if spec.get("tensor") else 0]
        else:
            det = spec["detections"]
            self.tensors = [names.index(det[key]) for key in ("boxes", "classes", "scores", "count")]

    def threshold(self, override: float | None) -> float | None:
        if override is not None:
            return override
        if self.kind == "yolo":
            return float(self.spec["yolo"]["score_threshold"])
        value = self.spec["detections"]["min_score_thresh"]
        return None if value is None else float(value)

    def detect(self, values: list[Tensor], score_threshold: float | None = None) -> Detections:
        """Detections relative to the model input, best first."""
        raw = [real(values[i], self.outputs[i]) for i in self.tensors]
        threshold = self.threshold(score_threshold)
        if self.kind == "ssd":
            found = decode_ssd(raw[0], raw[1], self.anchors, self.spec["detections"], threshold)
            found = nms_mediapipe(found, self.spec["nms"])
        elif self.kind == "yolo":
            assert threshold is not None
            shape = values[self.tensors[0]].shape
            rows, cols = (shape[-2], shape[-1]) if len(shape) >= 2 else (1, shape[-1])
            found = decode_yolo(
                raw[0], (rows, cols), self.spec["yolo"], self.input_w, self.input_h, threshold
            )
        else:
            boxes, classes, scores, count = raw
            found = decode_postprocess(boxes, classes, scores, count, self.spec["detections"], threshold)
            found = found.take(by_score(found.scores))  # the op's rows are in its own order
        return found

    def answer(self, values: list[Tensor], frame: Frame, score_threshold: float | None = None) -> list[Any]:
        """The JSON-able detections, in the original image's pixels."""
        found = self.detect(values, score_threshold)
        out = []
        for i, score in enumerate(found.scores):
            index = found.classes[i]
            item: dict[str, Any] = {"index": index}
            if self.labels is not None and 0 <= index < len(self.labels):
                item["label"] = self.labels[index]
            item["score"] = round(score, 6)
            x0, y0, x1, y1 = found.boxes[i]
            corners = to_image([(x0, y0), (x1, y1)], frame, self.input_w, self.input_h)
            item["box"] = [round(v, 2) for point in corners for v in point]
            if found.keypoints is not None:
                kps = to_image(found.keypoints[i], frame, self.input_w, self.input_h)
                item["keypoints"] = [[round(x, 2), round(y, 2)] for x, y in kps]
            out.append(item)
        return out


def to_image(points: Iterable[Point], frame: Frame, input_w: int, input_h: int) -> list[Point]:
    """x, y relative to the model input -> pixels of the original image, clipped to it."""
    place = frame.place
    sx, sy = frame.width / place.width, frame.height / place.height
    out = []
    for px, py in points:
        x = (px * input_w - place.left) * sx
        y = (py * input_h - place.top) * sy
        out.append((min(max(x, 0.0), frame.width), min(max(y, 0.0), frame.height)))
    return out
