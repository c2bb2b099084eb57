"""MediaPipe's NonMaxSuppressionCalculator (default and weighted, jaccard / modified-jaccard / IoU
overlap) and the greedy NMS of torchvision and Ultralytics, in float32 without NumPy: each candidate
against the kept boxes that may meet it, their overlaps computed a list at a time."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

from .floats import div, mul, sub, sums
from .postprocess import by_score
from .tensors import f32, f32s

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax relative to the model input
Point = tuple[float, float]


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


def similarities(rects1: list[Box], rect2: Box, overlap_type: str) -> list[float]:
    """MediaPipe's OverlapSimilarity of each of ``rects1`` with ``rect2``, in float32. Its "jaccard"
    divides by the area of the box enclosing both (Rectangle::Union), "modified-jaccard" by
    ``rect2``'s area, "intersection-over-union" by the union's area. A NaN coordinate gives 0."""
    bx0, by0, bx1, by1 = rect2
    iw = f32s([(a[2] if a[2] < bx1 else bx1) - (a[0] if a[0] > bx0 else bx0) for a in rects1])
    ih = f32s([(a[3] if a[3] < by1 else by1) - (a[1] if a[1] > by0 else by0) for a in rects1])
    inter = mul(iw, ih)
    if overlap_type == "jaccard":
        norm = mul(
            f32s([max(a[2], bx1) - min(a[0], bx0) for a in rects1]),
            f32s([max(a[3], by1) - min(a[1], by0) for a in rects1]),
        )
    else:
        area2 = f32(f32(bx1 - bx0) * f32(by1 - by0))
        if overlap_type == "modified-jaccard":
            norm = [area2] * len(rects1)
        else:
            areas = mul(f32s([a[2] - a[0] for a in rects1]), f32s([a[3] - a[1] for a in rects1]))
            norm = sub(f32s([area + area2 for area in areas]), inter)
    nan2 = any(map(math.isnan, rect2))
    return f32s(
        [
            i / n if w >= 0 and h >= 0 and n > 0 and not nan2 and not any(map(math.isnan, a)) else 0.0
            for a, w, h, i, n in zip(rects1, iw, ih, inter, norm, strict=True)
        ]
    )


def nms_mediapipe(d: Detections, opts: dict[str, Any]) -> Detections:
    order = by_score(d.scores)
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


def _meeter(threshold: float) -> Callable[[Box, Box], bool]:
    """``_meet`` when boxes that do not meet (0 similar) cannot pass ``threshold``, else always."""
    return _meet if threshold >= 0 else lambda a, b: True


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
    meet = _meeter(threshold)
    kept: list[int] = []
    groups: dict[int, list[Box]] = {}  # the kept boxes per class (one group: class-agnostic)
    for i in order:
        if len(kept) >= limit:
            break
        box = boxes[i]
        group = groups.setdefault(0 if classes is None else classes[i], [])
        near = [k for k in group if meet(k, box)]
        if not near or not any(v > threshold for v in similarities(near, box, overlap_type)):
            kept.append(i)
            group.append(box)
    return kept


def _weighted(d: Detections, order: list[int], overlap_type: str, threshold: float, limit: int) -> Detections:
    """MediaPipe's WeightedNonMaxSuppression: the best remaining box and every remaining box that
    overlaps it (each as rect1, the best as rect2) become one detection, their boxes and keypoints
    averaged with the scores as weights; the score and class stay the best box's."""
    threshold = f32(threshold)
    meet = _meeter(threshold)
    remaining = order
    clusters: list[list[int]] = []
    # MediaPipe's weighted NMS ignores max_num_detections; the output is capped here like the default's.
    while remaining and len(clusters) < limit:
        top = d.boxes[remaining[0]]
        near = [i for i in remaining if meet(d.boxes[i], top)]
        overlaps = similarities([d.boxes[i] for i in near], top, overlap_type)
        close = [i for i, v in zip(near, overlaps, strict=True) if v > threshold]
        clusters.append(close or remaining[:1])
        if not close:  # MediaPipe stops when an iteration removes nothing
            break
        gone = set(close)
        remaining = [i for i in remaining if i not in gone]
    boxes: list[Box] = []
    keypoints: list[list[Point]] | None = None if d.keypoints is None else []
    for members in clusters:
        # per member: its weight, then each box and keypoint value times it; summed as NumPy did
        rows = []
        for i in members:
            weight = d.scores[i]
            values: Sequence[float] = d.boxes[i]
            if d.keypoints is not None:
                values = [*values, *(v for point in d.keypoints[i] for v in point)]
            rows.append([weight, *f32s([v * weight for v in values])])
        total, *weighted = sums(rows)
        means = [div(v, total) for v in weighted]
        boxes.append((means[0], means[1], means[2], means[3]))
        if keypoints is not None:
            keypoints.append([(means[j], means[j + 1]) for j in range(4, len(means), 2)])
    tops = [c[0] for c in clusters]
    return Detections(boxes, [d.scores[i] for i in tops], [d.classes[i] for i in tops], keypoints)
