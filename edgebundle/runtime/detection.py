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

Plain Python, no NumPy, in float32 arithmetic as the model's outputs (``f32`` after each operation:
a double result of two float32 operands rounded to float32 is float32's own result). A frame has
thousands of boxes (YOLOv8's 8400 x 80 scores) of which a handful pass the threshold, so the scores
are first screened in C: a float32 whose top byte (sign and high exponent bits) says it is below the
threshold is skipped without becoming a Python number (``bytes.translate`` over every fourth byte,
rows combined as integers); what passes is decided exactly. Quantized 8-bit outputs are read through
a 256-entry table of their real values, and screened by it exactly.
"""

from __future__ import annotations

import functools
import math
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .anchors import ssd_anchors
from .geometry import Frame
from .postprocess import f32s, pairwise_sum
from .tensors import Tensor, f32

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .manifest import TensorSpec

Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax relative to the model input
Point = tuple[float, float]

# Ultralytics' non_max_suppression keeps at most this many candidates (the best) before NMS.
YOLO_MAX_NMS = 30000


class Detections(NamedTuple):
    boxes: list[Box]
    scores: list[float]
    classes: list[int]
    keypoints: list[list[Point]] | None  # per detection, x, y relative to the model input

    def take(self, index: Iterable[int]) -> Detections:
        index = list(index)
        kp = None if self.keypoints is None else [self.keypoints[i] for i in index]
        return Detections(
            [self.boxes[i] for i in index],
            [self.scores[i] for i in index],
            [self.classes[i] for i in index],
            kp,
        )


# --- an output's real numbers, and the screen --------------------------------------------------------


class Real(Protocol):
    """An output's real numbers, flat in C order: ``values[i]`` and ``values[a:b]`` as floats."""

    def __getitem__(self, index: Any) -> Any: ...

    def __len__(self) -> int: ...


class Table8:
    """A quantized 8-bit output read through the float32 value of each of its 256 codes."""

    def __init__(self, data: bytes, signed: bool, scale: float, zero_point: int) -> None:
        self.codes = memoryview(data).cast("b" if signed else "B")
        self.data = data
        self.signed = signed
        codes = range(-128, 128) if signed else range(256)
        values = f32s([x * f32(scale) for x in f32s([c - zero_point for c in codes])])
        # indexed by code: a signed code c is at c (negative indices wrap to the upper half)
        self.table = values[128:] + values[:128] if signed else values

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.table[c] for c in self.codes[index]]
        return self.table[self.codes[index]]

    def __len__(self) -> int:
        return len(self.codes)


def real(value: Tensor, info: TensorSpec) -> Real:
    """An output as real float32 numbers: (x - zero_point) * scale when quantized."""
    if info["scale"] and value.dtype in ("int8", "uint8"):
        return Table8(value.data, value.dtype == "int8", info["scale"], info["zero_point"])
    if value.dtype == "float32":
        return memoryview(value.data).cast("f")
    values = value.values()
    if info["scale"] and not value.is_float:
        scale = f32(info["scale"])
        return f32s([x * scale for x in f32s([v - info["zero_point"] for v in values])])
    return f32s([float(v) for v in values])


_BITS = struct.Struct("=I")
_FLOAT = struct.Struct("=f")
_TOP = 3 if sys.byteorder == "little" else 0  # the byte of the sign and the exponent's high bits
_NEXT = 2 if sys.byteorder == "little" else 1  # the exponent's low bit and the mantissa's top 7


def _prefix_passes(prefix: int, bound: float) -> bool:
    """Whether a float32 whose top 16 bits are ``prefix`` can be >= ``bound`` (NaN: yes)."""
    bits = (prefix << 16) | 0xFFFF if prefix < 0x8000 else prefix << 16  # its greatest value
    greatest: float = _FLOAT.unpack(_BITS.pack(bits))[0]
    return math.isnan(greatest) or greatest >= bound


def _first(lo: int, hi: int, passes: Callable[[int], bool]) -> int:
    """The first of lo..hi where ``passes`` turns true (it stays true after), or hi + 1."""
    while lo <= hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid - 1
        else:
            lo = mid + 1
    return lo


@functools.lru_cache(maxsize=32)
def _screen_tables(bound: float) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """Translate tables over the top byte (sure, the positive edge, the negative edge) and the next
    byte (at least / at most the edges'), for ``_screen32``. The test is monotone in the 16-bit
    prefix: over positive floats it passes from some prefix up, over negative ones (of magnitude
    under 2**127; the top byte 0xff always passes) from -0.0 down to some prefix."""
    sure, pos_edge, neg_edge = bytearray(256), bytearray(256), bytearray(256)
    sure[0xFF] = 1
    start = _first(0, 0x7FFF, lambda p: _prefix_passes(p, bound))  # 0x7fff is NaN: always found
    top, second = divmod(start, 256)
    pos_edge[top] = 1
    for t in range(top + 1, 0x80):
        sure[t] = 1
    at_least = bytes(1 if s >= second else 0 for s in range(256))
    end = _first(0x8000, 0xFEFF, lambda p: not _prefix_passes(p, bound)) - 1  # the last that passes
    at_most = bytes(256)
    if end >= 0x8000:
        top, second = divmod(end, 256)
        neg_edge[top] = 1
        for t in range(0x80, top):
            sure[t] = 1
        at_most = bytes(1 if s <= second else 0 for s in range(256))
    return bytes(sure), bytes(pos_edge), at_least, bytes(neg_edge), at_most


def _tops(values: memoryview, start: int, step: int, count: int, byte: int) -> bytes:
    """Byte ``byte`` of the float32 elements ``start + k * step`` (k < count)."""
    data = values.obj
    assert isinstance(data, bytes)
    return data[4 * start + byte : 4 * (start + (count - 1) * step) + 4 : 4 * step]


def _screen32(values: memoryview, start: int, step: int, count: int, bound: float) -> bytes:
    tops = _tops(values, start, step, count, _TOP)
    seconds = _tops(values, start, step, count, _NEXT)
    sure, pos_edge, at_least, neg_edge, at_most = _screen_tables(bound)

    def flags(data: bytes, table: bytes) -> int:
        return int.from_bytes(data.translate(table), "big")

    bits = flags(tops, sure) | (flags(tops, pos_edge) & flags(seconds, at_least))
    if any(neg_edge):
        bits |= flags(tops, neg_edge) & flags(seconds, at_most)
    return bits.to_bytes(count, "big")


def screen(values: Real, start: int, step: int, count: int, bound: float) -> bytes:
    """A byte per element ``start + k * step`` (k < count): 1 where it may be >= ``bound`` (never 0
    where it is; NaN passes). Float32 values are screened by their top 16 bits (within 1/128 of the
    bound), 8-bit ones exactly."""
    if isinstance(values, memoryview):  # float32
        return _screen32(values, start, step, count, bound)
    if isinstance(values, Table8):
        table = bytes(1 if not v < bound else 0 for v in values.table)
        return values.data[start : start + (count - 1) * step + 1 : step].translate(table)
    return bytes(1 if not values[start + k * step] < bound else 0 for k in range(count))


def any_row(flags: bytes, rows: int, n: int) -> bytes:
    """Per column of ``flags`` read as ``rows`` x ``n``: 1 where any row has a 1."""
    bits = 0
    for r in range(rows):
        bits |= int.from_bytes(flags[r * n : (r + 1) * n], "big")
    return bits.to_bytes(n, "big")


def positions(flags: bytes) -> list[int]:
    """The k whose byte is set in ``flags``, in order."""
    out = []
    k = flags.find(1)
    while k >= 0:
        out.append(k)
        k = flags.find(1, k + 1)
    return out


def _argmax(scores: Sequence[float]) -> int:
    """NumPy's argmax: the first NaN, else the first of equal maxima."""
    values = list(scores)
    nan = [math.isnan(v) for v in values]
    return nan.index(True) if any(nan) else values.index(max(values))


def _by_score(scores: Sequence[float]) -> list[int]:
    """Indices by descending score, stable, NaN last (NumPy's ``argsort(-scores, kind="stable")``)."""
    return sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), -scores[i]))


# --- SSD: MediaPipe's TensorsToDetectionsCalculator ------------------------------------------------


def anchor_array(options: dict[str, Any]) -> list[Box]:
    """x_center, y_center, w, h per anchor, in float32."""
    flat = f32s([v for anchor in ssd_anchors(options) for v in anchor])
    return [(flat[i], flat[i + 1], flat[i + 2], flat[i + 3]) for i in range(0, len(flat), 4)]


def _sigmoid(x: float) -> float:
    try:
        e = f32(math.exp(-x))
    except OverflowError:
        e = math.inf
    return f32(1 / f32(1 + e))


def _score_function(opts: dict[str, Any]) -> tuple[Callable[[float], float], Callable[[float], float]]:
    """A raw score -> the score (clipped, sigmoid), and a score bound -> the raw bound that screens for
    it (loose: the comparison after the screen is exact)."""
    if not opts["sigmoid_score"]:
        return (lambda x: x), (lambda bound: bound)
    limit = opts["score_clipping_thresh"]
    if limit is None:
        return _sigmoid, _logit_bound
    hi = f32(limit)

    def clipped(x: float) -> float:
        return _sigmoid(x if -hi <= x <= hi else (x if math.isnan(x) else (hi if x > hi else -hi)))

    def raw_bound(bound: float) -> float:
        raw = _logit_bound(bound)
        return -math.inf if raw <= -hi else min(raw, hi)

    return clipped, raw_bound


def _logit_bound(bound: float) -> float:
    """A raw x under which the float32 sigmoid stays under ``bound``: its rounding (and exp's) moves
    it by far less than 2**-22."""
    low = min(bound, 1.0) - 2.0**-22
    return math.log(low / (1 - low)) - 1e-6 if low > 0 else -math.inf


def decode_ssd(
    raw_boxes: Real, raw_scores: Real, anchors: list[Box], opts: dict[str, Any], min_score: float | None
) -> Detections:
    """Boxes and scores of the boxes that pass, in box order (before NMS), as MediaPipe decodes them."""
    n, coords, k = opts["num_boxes"], opts["num_coords"], opts["num_classes"]
    score_of, raw_bound = _score_function(opts)
    allowed = _allowed_classes(opts, k)
    if min_score is None:
        candidates: Iterable[int] = range(n)
    else:
        flags = screen(raw_scores, 0, 1, n * k, raw_bound(f32(min_score)))  # a class that may pass
        candidates = dict.fromkeys(p // k for p in positions(flags))
    threshold = None if min_score is None else f32(min_score)
    fmt, offset = opts["box_format"], opts["box_coord_offset"]
    xs, ys, ws, hs = f32(opts["x_scale"]), f32(opts["y_scale"]), f32(opts["w_scale"]), f32(opts["h_scale"])
    exp_size = opts["apply_exponential_on_box_size"]
    boxes: list[Box] = []
    scores: list[float] = []
    classes: list[int] = []
    index: list[int] = []
    for i in candidates:
        row = raw_scores[i * k : i * k + k]
        found = [score_of(row[j]) for j in allowed] if allowed is not None else [score_of(s) for s in row]
        if not found:
            continue
        j = _argmax(found)
        best = found[j]
        if not -math.inf < best < math.inf or (threshold is not None and not best >= threshold):
            continue
        b0, b1, b2, b3 = raw_boxes[i * coords + offset : i * coords + offset + 4]
        if fmt == "yxhw":
            yc, xc, h, w = b0, b1, b2, b3
        elif fmt == "xywh":
            xc, yc, w, h = b0, b1, b2, b3
        else:  # xyxy: distances to the anchor's centre, as MediaPipe reads them
            xc, yc = f32(f32(b2 - b0) / 2), f32(f32(b3 - b1) / 2)
            w, h = f32(b2 + b0), f32(b3 + b1)
        ax, ay, aw, ah = anchors[i]
        xc = f32(f32(f32(xc / xs) * aw) + ax)
        yc = f32(f32(f32(yc / ys) * ah) + ay)
        if exp_size:
            h = f32(_exp32(f32(h / hs)) * ah)
            w = f32(_exp32(f32(w / ws)) * aw)
        else:
            h = f32(f32(h / hs) * ah)
            w = f32(f32(w / ws) * aw)
        box = (f32(xc - w / 2), f32(yc - h / 2), f32(xc + w / 2), f32(yc + h / 2))
        if not (f32(box[2] - box[0]) >= 0 and f32(box[3] - box[1]) >= 0):  # NaN fails too
            continue
        boxes.append(box)
        scores.append(best)
        classes.append(allowed[j] if allowed is not None else j)
        index.append(i)
        if len(index) == opts["max_results"]:  # the first N that pass, in box order (MediaPipe's)
            break
    keypoints = None
    if opts["num_keypoints"]:
        keypoints = [_keypoints(raw_boxes, i * coords, anchors[i], opts, xs, ys) for i in index]
    out = Detections(boxes, scores, classes, keypoints)
    return _flip(out) if opts["flip_vertically"] else out


def _exp32(x: float) -> float:
    try:
        return f32(math.exp(x))
    except OverflowError:
        return math.inf


def _keypoints(raw: Real, base: int, anchor: Box, opts: dict[str, Any], xs: float, ys: float) -> list[Point]:
    start, step = base + opts["keypoint_coord_offset"], opts["num_values_per_keypoint"]
    ax, ay, aw, ah = anchor
    out = []
    for p in range(opts["num_keypoints"]):
        a, b = raw[start + p * step], raw[start + p * step + 1]
        kx, ky = (b, a) if opts["box_format"] == "yxhw" else (a, b)
        out.append((f32(f32(f32(kx / xs) * aw) + ax), f32(f32(f32(ky / ys) * ah) + ay)))
    return out


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
    boxes = [(b[0], f32(1 - b[3]), b[2], f32(1 - b[1])) for b in d.boxes]
    kp = None if d.keypoints is None else [[(x, f32(1 - y)) for x, y in kps] for kps in d.keypoints]
    return Detections(boxes, d.scores, d.classes, kp)


# --- MediaPipe's NonMaxSuppressionCalculator -------------------------------------------------------


def similarity(rect1: Box, rect2: Box, overlap_type: str) -> float:
    """MediaPipe's OverlapSimilarity in float32. Its "jaccard" divides by the area of the box
    enclosing both (Rectangle::Union), "modified-jaccard" by ``rect2``'s area,
    "intersection-over-union" by the union's area. A NaN coordinate gives 0."""
    ax0, ay0, ax1, ay1 = rect1
    bx0, by0, bx1, by1 = rect2
    iw = f32((ax1 if ax1 < bx1 else bx1) - (ax0 if ax0 > bx0 else bx0))
    ih = f32((ay1 if ay1 < by1 else by1) - (ay0 if ay0 > by0 else by0))
    if not (iw >= 0 and ih >= 0) or any(map(math.isnan, (*rect1, *rect2))):  # NaN: as NumPy's minimum
        return 0.0
    inter = f32(iw * ih)
    if overlap_type == "jaccard":
        norm = f32(f32(max(ax1, bx1) - min(ax0, bx0)) * f32(max(ay1, by1) - min(ay0, by0)))
    elif overlap_type == "modified-jaccard":
        norm = f32(f32(bx1 - bx0) * f32(by1 - by0))
    else:
        norm = f32(f32(f32(f32(ax1 - ax0) * f32(ay1 - ay0)) + f32(f32(bx1 - bx0) * f32(by1 - by0))) - inter)
    return f32(inter / norm) if norm > 0 else 0.0


def nms_mediapipe(d: Detections, opts: dict[str, Any]) -> Detections:
    order = _by_score(d.scores)
    if opts["min_score_threshold"] > 0:  # the loop stops at the first score under it
        floor = f32(opts["min_score_threshold"])
        order = [i for i in order if d.scores[i] >= floor]
    limit = opts["max_num_detections"] if opts["max_num_detections"] > -1 else len(order)
    threshold = opts["min_suppression_threshold"]
    if opts["algorithm"] == "weighted":
        return _weighted(d, order, opts["overlap_type"], threshold, limit)
    return d.take(greedy(d.boxes, order, threshold, opts["overlap_type"], None, limit))


def _meet(a: Box, b: Box) -> bool:
    """Whether the boxes may overlap: when not, ``similarity`` is 0 (a NaN coordinate: not)."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def greedy(
    boxes: list[Box],
    order: list[int],
    threshold: float,
    overlap_type: str,
    classes: list[int] | None,
    limit: int,
) -> list[int]:
    """Greedy NMS over ``order`` (best first): keep a box unless a kept one (as rect1) overlaps it
    more than ``threshold`` (of the same class when ``classes`` is given); at most ``limit`` kept.
    Both MediaPipe's default NMS and torchvision's ``nms`` do this."""
    threshold = f32(threshold)
    # boxes that do not meet are 0 similar: with a threshold of 0 or more they never suppress
    meet = _meet if threshold >= 0 else lambda a, b: True
    kept: list[int] = []
    groups: dict[int, list[Box]] = {}  # the kept boxes per class (one group: class-agnostic)
    for i in order:
        if len(kept) >= limit:
            break
        box = boxes[i]
        group = groups.setdefault(0 if classes is None else classes[i], [])
        if not any(meet(k, box) and similarity(k, box, overlap_type) > threshold for k in group):
            kept.append(i)
            group.append(box)
    return kept


def _weighted(d: Detections, order: list[int], overlap_type: str, threshold: float, limit: int) -> Detections:
    """MediaPipe's WeightedNonMaxSuppression: the best remaining box and every remaining box that
    overlaps it (each as rect1, the best as rect2) become one detection, their boxes and keypoints
    averaged with the scores as weights; the score and class stay the best box's."""
    threshold = f32(threshold)
    meet = _meet if threshold >= 0 else lambda a, b: True
    remaining = order
    clusters: list[list[int]] = []
    while remaining:
        top = d.boxes[remaining[0]]
        close = [
            i
            for i in remaining
            if meet(d.boxes[i], top) and similarity(d.boxes[i], top, overlap_type) > threshold
        ]
        clusters.append(close or remaining[:1])
        if not close:  # MediaPipe stops when an iteration removes nothing
            break
        gone = set(close)
        remaining = [i for i in remaining if i not in gone]
    # MediaPipe's weighted NMS ignores max_num_detections; the output is capped here like the default's.
    clusters = clusters[:limit]
    boxes: list[Box] = []
    keypoints: list[list[Point]] | None = None if d.keypoints is None else []
    for members in clusters:
        weights = [d.scores[i] for i in members]
        total = _sum(weights)

        def average(values: list[float], weights: list[float] = weights, total: float = total) -> float:
            return _div(_sum([f32(v * w) for v, w in zip(values, weights, strict=True)]), total)

        boxes.append(tuple(average([d.boxes[i][c] for i in members]) for c in range(4)))  # type: ignore[arg-type]
        if keypoints is not None and d.keypoints is not None:
            kps = [d.keypoints[i] for i in members]
            keypoints.append(
                [
                    (average([k[p][0] for k in kps]), average([k[p][1] for k in kps]))
                    for p in range(len(kps[0]))
                ]
            )
    tops = [c[0] for c in clusters]
    return Detections(boxes, [d.scores[i] for i in tops], [d.classes[i] for i in tops], keypoints)


def _div(a: float, b: float) -> float:
    """a / b in float32, IEEE's way for b = 0 (weights of score 0): inf with a's sign, or NaN."""
    if b:
        return f32(a / b)
    return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)


def _sum(values: list[float]) -> float:
    """A float32 sum as NumPy's ``add.reduceat`` gives it: the first value plus the pairwise sum of
    the rest."""
    return values[0] if len(values) == 1 else f32(values[0] + pairwise_sum(values[1:]))


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
        flags = any_row(screen(pred, 4 * n, 1, count * n, thr), count, n)  # any class may pass
        for i in positions(flags):
            conf = pred[4 * n + i : width * n : n]
            _take(conf, thr, (pred[i], pred[n + i], pred[2 * n + i], pred[3 * n + i]), xywh, scores, classes)
        normalized = _normalized(pred, [(0, 1, 4 * n)], opts["boxes"])
    else:
        n, width = shape
        for i in positions(screen(pred, 4, width, n, thr)):
            row = pred[i * width : (i + 1) * width]
            if not row[4] > thr:
                continue
            conf = [f32(s * row[4]) for s in row[5:]]
            _take(conf, thr, (row[0], row[1], row[2], row[3]), xywh, scores, classes)
        normalized = _normalized(pred, [(c, width, n) for c in range(4)], opts["boxes"])
    if len(scores) > YOLO_MAX_NMS:
        best = _by_score(scores)[:YOLO_MAX_NMS]
        xywh, scores, classes = [xywh[i] for i in best], [scores[i] for i in best], [classes[i] for i in best]
    boxes = []
    for x, y, w, h in xywh:
        hw, hh = f32(w / 2), f32(h / 2)
        boxes.append((f32(x - hw), f32(y - hh), f32(x + hw), f32(y + hh)))
    kept = greedy(
        boxes,
        _by_score(scores),
        opts["iou_threshold"],
        "intersection-over-union",
        None if opts["class_agnostic"] else classes,
        opts["max_detections"],
    )
    boxes = [boxes[i] for i in kept]
    if not normalized:
        sx, sy = f32(input_w), f32(input_h)
        boxes = [(f32(a / sx), f32(b / sy), f32(c / sx), f32(d / sy)) for a, b, c, d in boxes]
    return Detections(boxes, [scores[i] for i in kept], [classes[i] for i in kept], None)


def _take(
    conf: Sequence[float], thr: float, xywh: Box, boxes: list[Box], scores: list[float], classes: list[int]
) -> None:
    """Ultralytics' best class of one candidate, kept when its score is over ``thr``."""
    j = _argmax(conf) if len(conf) else 0
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
    for start, step, count in boxes:
        if isinstance(pred, memoryview):  # only the values of magnitude 2 and more (or NaN) are read
            far = _tops(pred, start, step, count, _TOP).translate(_FAR)
            index = [start + k * step for k in positions(far)]
        elif isinstance(pred, Table8):
            table = bytes(0 if -2.0 <= v <= 2.0 else 1 for v in pred.table)
            far = pred.data[start : start + (count - 1) * step + 1 : step].translate(table)
            index = [start + k * step for k in positions(far)]
        else:
            index = list(range(start, start + count * step, step))
        if not all(-2.0 <= pred[i] <= 2.0 for i in index):
            return False
    return True


_FAR = bytes(1 if top & 0x7F >= 0x40 else 0 for top in range(256))  # float32 top bytes of |x| >= 2


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
        return found.take(_by_score(found.scores))

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
