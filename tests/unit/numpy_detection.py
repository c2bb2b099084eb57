"""The detection decoders in NumPy, as the runtime had them until they became plain Python: the
reference the plain-Python ones (edgebundle/runtime/detection.py) must equal bit for bit wherever no
exp is involved (NumPy's float32 exp is its own SIMD approximation; the runtime's is correctly
rounded, as MediaPipe's expf)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from edgebundle.runtime import detection
from edgebundle.runtime.anchors import ssd_anchors
from edgebundle.runtime.tensors import Tensor

if TYPE_CHECKING:
    from edgebundle.runtime.manifest import TensorSpec

Array = np.ndarray[Any, Any]

YOLO_MAX_NMS = detection.YOLO_MAX_NMS


class Detections(NamedTuple):
    boxes: Array  # [n, 4] xmin, ymin, xmax, ymax relative to the model input
    scores: Array  # [n]
    classes: Array  # [n] int
    keypoints: Array | None  # [n, k, 2] x, y relative to the model input

    def take(self, index: Array) -> Detections:
        kp = None if self.keypoints is None else self.keypoints[index]
        return Detections(self.boxes[index], self.scores[index], self.classes[index], kp)


def _float(value: Tensor | Array, info: TensorSpec) -> Array:
    """An output as float32 real numbers: (x - zero_point) * scale when quantized."""
    arr = (
        np.frombuffer(value.data, dtype=value.dtype).reshape(value.shape)
        if isinstance(value, Tensor)
        else value
    )
    if arr.dtype.kind == "f" or not info["scale"]:
        return np.asarray(arr, dtype=np.float32)
    return (arr.astype(np.float32) - np.float32(info["zero_point"])) * np.float32(info["scale"])


# --- SSD: MediaPipe's TensorsToDetectionsCalculator ------------------------------------------------


def anchor_array(options: dict[str, Any]) -> Array:
    """[N, 4] float32 x_center, y_center, w, h."""
    return np.asarray(ssd_anchors(options), dtype=np.float32).reshape(-1, 4)


def decode_ssd(
    raw_boxes: Array, raw_scores: Array, anchors: Array, opts: dict[str, Any], min_score: float | None
) -> Detections:
    """Boxes and scores of the boxes that pass, in box order (before NMS), as MediaPipe decodes them."""
    n, coords = opts["num_boxes"], opts["num_coords"]
    raw = raw_boxes.reshape(n, coords)
    b = raw[:, opts["box_coord_offset"] : opts["box_coord_offset"] + 4]
    fmt = opts["box_format"]
    if fmt == "yxhw":
        yc, xc, h, w = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    elif fmt == "xywh":
        xc, yc, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    else:  # xyxy: distances to the anchor's centre, as MediaPipe reads them
        xc, yc = (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2
        w, h = b[:, 2] + b[:, 0], b[:, 3] + b[:, 1]
    ax, ay, aw, ah = anchors[:, 0], anchors[:, 1], anchors[:, 2], anchors[:, 3]
    xc = xc / np.float32(opts["x_scale"]) * aw + ax
    yc = yc / np.float32(opts["y_scale"]) * ah + ay
    if opts["apply_exponential_on_box_size"]:
        h = np.exp(h / np.float32(opts["h_scale"])) * ah
        w = np.exp(w / np.float32(opts["w_scale"])) * aw
    else:
        h = h / np.float32(opts["h_scale"]) * ah
        w = w / np.float32(opts["w_scale"]) * aw
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)

    scores = raw_scores.reshape(n, opts["num_classes"])
    if opts["sigmoid_score"]:
        if opts["score_clipping_thresh"] is not None:
            limit = np.float32(opts["score_clipping_thresh"])
            scores = np.clip(scores, -limit, limit)
        scores = np.float32(1) / (np.float32(1) + np.exp(-scores))
    allowed = _allowed_classes(opts, scores.shape[1])
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    classes = np.argmax(scores, axis=1)  # the first of equal maxima, as MediaPipe's strict '<'
    best = scores[np.arange(n), classes]

    keep = np.isfinite(best)  # every class ignored: no detection
    if min_score is not None:
        keep &= best >= np.float32(min_score)
    keep &= ((boxes[:, 2] - boxes[:, 0]) >= 0) & ((boxes[:, 3] - boxes[:, 1]) >= 0)  # NaN fails too
    index = np.flatnonzero(keep)
    if opts["max_results"] > 0:  # the first N that pass, in box order (MediaPipe's behaviour)
        index = index[: opts["max_results"]]

    keypoints = None
    if opts["num_keypoints"]:
        start, step = opts["keypoint_coord_offset"], opts["num_values_per_keypoint"]
        kp = raw[index][:, start : start + opts["num_keypoints"] * step].reshape(
            len(index), opts["num_keypoints"], step
        )
        kx, ky = (kp[:, :, 1], kp[:, :, 0]) if fmt == "yxhw" else (kp[:, :, 0], kp[:, :, 1])
        sel = anchors[index]
        kx = kx / np.float32(opts["x_scale"]) * sel[:, 2:3] + sel[:, 0:1]
        ky = ky / np.float32(opts["y_scale"]) * sel[:, 3:4] + sel[:, 1:2]
        keypoints = np.stack([kx, ky], axis=2)
    out = Detections(boxes[index], best[index], classes[index], keypoints)
    if opts["flip_vertically"]:
        out = _flip(out)
    return out


def _allowed_classes(opts: dict[str, Any], count: int) -> Array | None:
    if opts["allow_classes"]:
        mask = np.zeros(count, dtype=bool)
        mask[[c for c in opts["allow_classes"] if 0 <= c < count]] = True
        return mask
    if opts["ignore_classes"]:
        mask = np.ones(count, dtype=bool)
        mask[[c for c in opts["ignore_classes"] if 0 <= c < count]] = False
        return mask
    return None


def _flip(d: Detections) -> Detections:
    boxes = d.boxes.copy()
    boxes[:, 1], boxes[:, 3] = 1 - d.boxes[:, 3], 1 - d.boxes[:, 1]
    kp = None
    if d.keypoints is not None:
        kp = d.keypoints.copy()
        kp[:, :, 1] = 1 - kp[:, :, 1]
    return Detections(boxes, d.scores, d.classes, kp)


# --- MediaPipe's NonMaxSuppressionCalculator -------------------------------------------------------


def similarity(rect1: Array, rect2: Array, overlap_type: str) -> Array:
    """MediaPipe's OverlapSimilarity, broadcast over [..., 4] xmin, ymin, xmax, ymax boxes. Its
    "jaccard" divides by the area of the box enclosing both (Rectangle::Union), "modified-jaccard" by
    ``rect2``'s area, "intersection-over-union" by the union's area."""
    ax0, ay0, ax1, ay1 = rect1[..., 0], rect1[..., 1], rect1[..., 2], rect1[..., 3]
    bx0, by0, bx1, by1 = rect2[..., 0], rect2[..., 1], rect2[..., 2], rect2[..., 3]
    iw = np.minimum(ax1, bx1) - np.maximum(ax0, bx0)
    ih = np.minimum(ay1, by1) - np.maximum(ay0, by0)
    inter = iw * ih
    if overlap_type == "jaccard":
        norm = (np.maximum(ax1, bx1) - np.minimum(ax0, bx0)) * (np.maximum(ay1, by1) - np.minimum(ay0, by0))
    elif overlap_type == "modified-jaccard":
        norm = (bx1 - bx0) * (by1 - by0)
    else:
        norm = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    ok = (iw >= 0) & (ih >= 0) & (norm > 0)
    out: Array = np.zeros(ok.shape, dtype=np.result_type(inter, norm))
    np.divide(inter, norm, out=out, where=ok)
    return out


def _by_score(scores: Array) -> Array:
    return np.argsort(-scores, kind="stable")


# Up to this many candidates, NMS compares them all at once (n x n temporaries, 1 MB each at the
# limit); past it, one kept box against the rest at a time, which needs no n x n memory.
MATRIX_MAX = 512


def nms_mediapipe(d: Detections, opts: dict[str, Any]) -> Detections:
    order = _by_score(d.scores)
    if opts["min_score_threshold"] > 0:  # the loop stops at the first score under it
        order = order[d.scores[order] >= np.float32(opts["min_score_threshold"])]
    limit = opts["max_num_detections"] if opts["max_num_detections"] > -1 else len(order)
    threshold = opts["min_suppression_threshold"]
    if opts["algorithm"] == "weighted":
        return _weighted(d, order, opts["overlap_type"], threshold, limit)
    return d.take(greedy(d.boxes, order, threshold, opts["overlap_type"], None, limit))


def _overlaps(boxes: Array, overlap_type: str, threshold: float, classes: Array | None) -> Array:
    """[n, n] booleans: box i (rect1) overlaps box j (rect2) more than ``threshold``; the same
    arithmetic as ``similarity``, in place (n x n temporaries are what this costs)."""
    x0, y0, x1, y1 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    area = (x1 - x0) * (y1 - y0)
    iw = np.minimum(x1[:, None], x1[None, :])
    tmp = np.maximum(x0[:, None], x0[None, :])
    iw -= tmp
    ih = np.minimum(y1[:, None], y1[None, :])
    np.maximum(y0[:, None], y0[None, :], out=tmp)
    ih -= tmp
    ok = iw >= 0
    ok &= ih >= 0
    inter = np.multiply(iw, ih, out=tmp)
    norm = iw
    if overlap_type == "jaccard":
        np.maximum(x1[:, None], x1[None, :], out=norm)
        norm -= np.minimum(x0[:, None], x0[None, :])
        np.maximum(y1[:, None], y1[None, :], out=ih)
        ih -= np.minimum(y0[:, None], y0[None, :])
        norm *= ih
    elif overlap_type == "modified-jaccard":
        norm[:] = area[None, :]
    else:
        np.add(area[:, None], area[None, :], out=norm)
        norm -= inter
    ok &= norm > 0
    sim = ih
    sim.fill(0)
    np.divide(inter, norm, out=sim, where=ok)
    over: Array = sim > threshold
    if classes is not None:
        over &= classes[:, None] == classes[None, :]
    return over


def greedy(
    boxes: Array, order: Array, threshold: float, overlap_type: str, classes: Array | None, limit: int
) -> Array:
    """Greedy NMS over ``order`` (best first): keep the first, drop every later box whose overlap
    with it (the kept box as rect1) is ``> threshold`` (of the same class when ``classes`` is given),
    repeat; at most ``limit`` kept. Both MediaPipe's default NMS and torchvision's ``nms`` do this."""
    kept: list[int] = []
    if len(order) <= MATRIX_MAX:
        over = _overlaps(boxes[order], overlap_type, threshold, None if classes is None else classes[order])
        alive = np.ones(len(order), dtype=bool)
        for i in range(len(order)):
            if len(kept) >= limit:
                break
            if alive[i]:
                kept.append(i)
                alive &= ~over[i]
        return order[np.asarray(kept, dtype=np.int64)]
    while order.size and len(kept) < limit:
        i = order[0]
        kept.append(int(i))
        rest = order[1:]
        suppress = similarity(boxes[i], boxes[rest], overlap_type) > threshold
        if classes is not None:
            suppress &= classes[rest] == classes[i]
        order = rest[~suppress]
    return np.asarray(kept, dtype=np.int64)


def _weighted(d: Detections, order: Array, overlap_type: str, threshold: float, limit: int) -> Detections:
    """MediaPipe's WeightedNonMaxSuppression: the best remaining box and every remaining box that
    overlaps it (each as rect1, the best as rect2) become one detection, their boxes and keypoints
    averaged with the scores as weights; the score and class stay the best box's."""
    over = _overlaps(d.boxes[order], overlap_type, threshold, None) if len(order) <= MATRIX_MAX else None
    remaining = np.arange(len(order))
    clusters: list[Array] = []
    while remaining.size:
        top = remaining[0]
        if over is not None:
            close = over[remaining, top]
        else:
            close = similarity(d.boxes[order[remaining]], d.boxes[order[top]], overlap_type) > threshold
        members = remaining[close]
        clusters.append(members if members.size else remaining[:1])
        if not members.size:  # MediaPipe stops when an iteration removes nothing
            break
        remaining = remaining[~close]
    # MediaPipe's weighted NMS ignores max_num_detections; the output is capped here like the default's.
    clusters = clusters[:limit]
    tops = order[[c[0] for c in clusters]] if clusters else order[:0]
    if not clusters:
        return d.take(tops)
    members = order[np.concatenate(clusters)]
    starts = np.cumsum([0] + [len(c) for c in clusters[:-1]])
    weights = d.scores[members]
    total = np.add.reduceat(weights, starts)
    boxes = np.add.reduceat(d.boxes[members] * weights[:, None], starts) / total[:, None]
    keypoints = None
    if d.keypoints is not None:
        keypoints = (
            np.add.reduceat(d.keypoints[members] * weights[:, None, None], starts) / total[:, None, None]
        )
    return Detections(boxes.astype(np.float32), d.scores[tops], d.classes[tops], keypoints)


# --- YOLO: Ultralytics' non_max_suppression -------------------------------------------------------


def decode_yolo(
    pred: Array, opts: dict[str, Any], input_w: int, input_h: int, score_threshold: float
) -> Detections:
    rows = pred.reshape(pred.shape[-2], pred.shape[-1])
    if opts["layout"] == "v8":  # [4+C, N]
        rows = rows.T
    normalized = _normalized(rows[:, :4], opts["boxes"])
    if opts["layout"] == "v8":
        conf_all = rows[:, 4:]
    else:  # v5 [N, 5+C]: class scores times objectness, for the boxes whose objectness passes
        rows = rows[rows[:, 4] > np.float32(score_threshold)]
        conf_all = rows[:, 5:] * rows[:, 4:5]
    classes = np.argmax(conf_all, axis=1) if conf_all.shape[1] else np.zeros(len(rows), dtype=np.int64)
    scores = conf_all[np.arange(len(rows)), classes] if conf_all.shape[1] else np.zeros(len(rows))
    keep = np.flatnonzero(scores > np.float32(score_threshold))
    xywh = rows[keep, :4]
    scores, classes = scores[keep], classes[keep]
    if len(scores) > YOLO_MAX_NMS:
        best = _by_score(scores)[:YOLO_MAX_NMS]
        xywh, scores, classes = xywh[best], scores[best], classes[best]
    half = xywh[:, 2:4] / 2
    boxes = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)
    classes_or_none = None if opts["class_agnostic"] else classes
    order = _by_score(scores)
    kept = greedy(
        boxes,
        order,
        opts["iou_threshold"],
        "intersection-over-union",
        classes_or_none,
        opts["max_detections"],
    )
    boxes = boxes[kept]
    if not normalized:
        boxes = boxes / np.asarray([input_w, input_h, input_w, input_h], dtype=np.float32)
    return Detections(boxes, scores[kept], classes[kept], None)


def _normalized(xywh: Array, mode: str) -> bool:
    if mode != "auto":
        return mode == "normalized"
    # Exports that normalise (Ultralytics' TFLite) give centres and sizes within 0..1 (a little past
    # it at the edges); pixel boxes of any real input reach far beyond.
    return not xywh.size or float(np.abs(xywh).max()) <= 2.0


# --- TFLite_Detection_PostProcess -----------------------------------------------------------------


def decode_postprocess(
    boxes: Array, classes: Array, scores: Array, count: Array, opts: dict[str, Any], min_score: float | None
) -> Detections:
    """The op's boxes ([ymin, xmin, ymax, xmax], relative), classes, scores and count: the first
    ``count`` rows that pass the class filter, the threshold and a non-negative size."""
    n = max(0, min(int(count.reshape(-1)[0]), boxes.reshape(-1, 4).shape[0]))
    yxyx = boxes.reshape(-1, 4)[:n]
    cls = classes.reshape(-1)[:n].astype(np.int64)  # float class ids, truncated as MediaPipe does
    sc = scores.reshape(-1)[:n]
    keep = np.ones(n, dtype=bool)
    allowed = _allowed_classes(opts, int(cls.max()) + 1 if n else 0)
    if allowed is not None:
        keep &= np.isin(cls, np.flatnonzero(allowed))
    if min_score is not None:
        keep &= sc >= np.float32(min_score)
    xyxy = yxyx[:, [1, 0, 3, 2]]
    keep &= ((xyxy[:, 2] - xyxy[:, 0]) >= 0) & ((xyxy[:, 3] - xyxy[:, 1]) >= 0)
    index = np.flatnonzero(keep)
    if opts["max_results"] > 0:
        index = index[: opts["max_results"]]
    return Detections(xyxy[index], sc[index], cls[index], None)


# --- the session's decoder ------------------------------------------------------------------------


class Detector(detection.Detector):
    """The runtime's Detector (the recipe's tensors and threshold) decoding as the NumPy code did."""

    def __init__(
        self, spec: dict[str, Any], outputs: list[TensorSpec], input_size: tuple[int, int], labels: Any
    ) -> None:
        super().__init__(spec, outputs, input_size, labels)
        if self.kind == "ssd":
            self.anchor_rows = anchor_array(spec["anchors"])

    def detect(self, values: list[Any], score_threshold: float | None = None) -> Detections:  # type: ignore[override]
        """Detections relative to the model input, best first."""
        raw = [_float(values[i], self.outputs[i]) for i in self.tensors]
        threshold = self.threshold(score_threshold)
        if self.kind == "ssd":
            found = decode_ssd(raw[0], raw[1], self.anchor_rows, self.spec["detections"], threshold)
            found = nms_mediapipe(found, self.spec["nms"])
        elif self.kind == "yolo":
            assert threshold is not None
            found = decode_yolo(raw[0], self.spec["yolo"], self.input_w, self.input_h, threshold)
        else:
            boxes, classes, scores, count = raw
            found = decode_postprocess(boxes, classes, scores, count, self.spec["detections"], threshold)
        return found.take(_by_score(found.scores))
