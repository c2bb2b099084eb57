"""The runtime's detection decoders against an independent reference written here with plain loops
from MediaPipe's calculators (ssd_anchors_calculator.cc, tensors_to_detections_calculator.cc,
non_max_suppression_calculator.cc) and Ultralytics' ``non_max_suppression``; nothing is shared with
edgebundle/runtime/detection.py but the option dictionaries."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgebundle.runtime.anchors import ssd_anchors
from edgebundle.runtime.detection import (
    Detector,
    anchor_array,
    decode_postprocess,
    decode_ssd,
    decode_yolo,
    nms_mediapipe,
    to_image,
)
from edgebundle.runtime.floats import Real
from edgebundle.runtime.geometry import Frame, Placement, placement
from tests.unit.arrays import FLOAT, tensor, view


def view32(arr: Any) -> Real:
    """Numbers as a float32 output, as the decoders read it."""
    return view(np.asarray(arr, dtype=np.float32))


# --- the reference -------------------------------------------------------------------------------


def ref_anchors(o: dict[str, Any]) -> list[tuple[float, float, float, float]]:
    def scale(i: int, n: int) -> float:
        return (
            (o["min_scale"] + o["max_scale"]) / 2
            if n == 1
            else o["min_scale"] + (o["max_scale"] - o["min_scale"]) * i / (n - 1)
        )

    strides = o["strides"]
    out = []
    layer = 0
    while layer < o["num_layers"]:
        heights, widths, ratios, scales = [], [], [], []
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            s = scale(last, len(strides))
            if last == 0 and o["reduce_boxes_in_lowest_layer"]:
                ratios.extend([1.0, 2.0, 0.5])
                scales.extend([0.1, s, s])
            else:
                for r in o["aspect_ratios"]:
                    ratios.append(r)
                    scales.append(s)
                if o["interpolated_scale_aspect_ratio"] > 0:
                    nxt = 1.0 if last == len(strides) - 1 else scale(last + 1, len(strides))
                    scales.append(math.sqrt(s * nxt))
                    ratios.append(o["interpolated_scale_aspect_ratio"])
            last += 1
        for r, s in zip(ratios, scales, strict=True):
            heights.append(s / math.sqrt(r))
            widths.append(s * math.sqrt(r))
        if o["feature_map_height"]:
            fh, fw = o["feature_map_height"][layer], o["feature_map_width"][layer]
        else:
            fh = math.ceil(o["input_size_height"] / strides[layer])
            fw = math.ceil(o["input_size_width"] / strides[layer])
        for y in range(fh):
            for x in range(fw):
                for k in range(len(heights)):
                    xc = (x + o["anchor_offset_x"]) / fw
                    yc = (y + o["anchor_offset_y"]) / fh
                    if o["fixed_anchor_size"]:
                        out.append((xc, yc, 1.0, 1.0))
                    else:
                        out.append((xc, yc, widths[k], heights[k]))
        layer = last
    return out


def ref_tensors_to_detections(
    raw_boxes: Any, raw_scores: Any, anchors: Any, o: dict[str, Any], thresh: Any
) -> list[dict[str, Any]]:
    n, c, k = o["num_boxes"], o["num_coords"], o["num_classes"]
    rb = [float(v) for v in np.asarray(raw_boxes, dtype=np.float64).reshape(-1)]
    rs = [float(v) for v in np.asarray(raw_scores, dtype=np.float64).reshape(-1)]
    fmt = o["box_format"]
    dets = []
    for i in range(n):
        if o["max_results"] > 0 and len(dets) == o["max_results"]:
            break
        off = i * c + o["box_coord_offset"]
        v = rb[off : off + 4]
        if fmt == "yxhw":
            yc, xc, h, w = v
        elif fmt == "xywh":
            xc, yc, w, h = v
        else:
            xc, yc = (-v[0] + v[2]) / 2, (-v[1] + v[3]) / 2
            w, h = v[2] + v[0], v[3] + v[1]
        ax, ay, aw, ah = anchors[i]
        xc = xc / o["x_scale"] * aw + ax
        yc = yc / o["y_scale"] * ah + ay
        if o["apply_exponential_on_box_size"]:
            h = math.exp(h / o["h_scale"]) * ah
            w = math.exp(w / o["w_scale"]) * aw
        else:
            h = h / o["h_scale"] * ah
            w = w / o["w_scale"] * aw
        ymin, xmin, ymax, xmax = yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2
        best, cls = -math.inf, -1
        for j in range(k):
            if o["allow_classes"] and j not in o["allow_classes"]:
                continue
            if not o["allow_classes"] and j in o["ignore_classes"]:
                continue
            s = rs[i * k + j]
            if o["sigmoid_score"]:
                if o["score_clipping_thresh"] is not None:
                    s = min(max(s, -o["score_clipping_thresh"]), o["score_clipping_thresh"])
                s = 1 / (1 + math.exp(-s))
            if best < s:
                best, cls = s, j
        if cls < 0 or (thresh is not None and best < thresh):
            continue
        if xmax - xmin < 0 or ymax - ymin < 0:
            continue
        if o["flip_vertically"]:
            ymin, ymax = 1 - ymax, 1 - ymin
        kps = []
        for p in range(o["num_keypoints"]):
            ko = i * c + o["keypoint_coord_offset"] + p * o["num_values_per_keypoint"]
            a, b = rb[ko], rb[ko + 1]
            kx, ky = (b, a) if fmt == "yxhw" else (a, b)
            kx = kx / o["x_scale"] * aw + ax
            ky = ky / o["y_scale"] * ah + ay
            kps.append([kx, 1 - ky if o["flip_vertically"] else ky])
        dets.append({"box": [xmin, ymin, xmax, ymax], "score": best, "class": cls, "keypoints": kps})
    return dets


def ref_overlap(r1: list[float], r2: list[float], kind: str) -> float:
    if r2[2] < r1[0] or r1[2] < r2[0] or r2[3] < r1[1] or r1[3] < r2[1]:
        return 0.0
    inter = (min(r1[2], r2[2]) - max(r1[0], r2[0])) * (min(r1[3], r2[3]) - max(r1[1], r2[1]))
    a1 = (r1[2] - r1[0]) * (r1[3] - r1[1])
    a2 = (r2[2] - r2[0]) * (r2[3] - r2[1])
    if kind == "jaccard":
        norm = (max(r1[2], r2[2]) - min(r1[0], r2[0])) * (max(r1[3], r2[3]) - min(r1[1], r2[1]))
    elif kind == "modified-jaccard":
        norm = a2
    else:
        norm = a1 + a2 - inter
    return inter / norm if norm > 0 else 0.0


def ref_nms(dets: list[dict[str, Any]], o: dict[str, Any]) -> list[dict[str, Any]]:
    ranked = sorted(range(len(dets)), key=lambda i: -dets[i]["score"])  # stable: lower index first
    limit = o["max_num_detections"] if o["max_num_detections"] > -1 else len(ranked)
    out: list[dict[str, Any]] = []
    if o["algorithm"] == "default":
        for i in ranked:
            d = dets[i]
            if o["min_score_threshold"] > 0 and d["score"] < o["min_score_threshold"]:
                break
            if not any(
                ref_overlap(r["box"], d["box"], o["overlap_type"]) > o["min_suppression_threshold"]
                for r in out
            ):
                out.append(d)
            if len(out) >= limit:
                break
        return out
    remaining = ranked
    while remaining:
        top = dets[remaining[0]]
        if o["min_score_threshold"] > 0 and top["score"] < o["min_score_threshold"]:
            break
        cand, rest = [], []
        for i in remaining:
            if ref_overlap(dets[i]["box"], top["box"], o["overlap_type"]) > o["min_suppression_threshold"]:
                cand.append(i)
            else:
                rest.append(i)
        result = dict(top)
        if cand:
            total = sum(dets[i]["score"] for i in cand)
            result["box"] = [
                sum(dets[i]["box"][j] * dets[i]["score"] for i in cand) / total for j in range(4)
            ]
            result["keypoints"] = [
                [sum(dets[i]["keypoints"][p][j] * dets[i]["score"] for i in cand) / total for j in range(2)]
                for p in range(len(top["keypoints"]))
            ]
        out.append(result)
        if len(rest) == len(remaining):
            break
        remaining = rest
    return out[:limit]


def ref_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_yolo(
    pred: Any, layout: str, conf: float, iou: float, agnostic: bool, max_det: int
) -> list[dict[str, Any]]:
    """Ultralytics: best class only, ``> conf``, class-offset (here: same-class) greedy IoU NMS."""
    p = np.asarray(pred, dtype=np.float64)[0]
    rows = p.T if layout == "v8" else p
    cands = []
    for i, r in enumerate(rows):
        if layout == "v5":
            if r[4] <= conf:
                continue
            cls_scores = [s * r[4] for s in r[5:]]
        else:
            cls_scores = list(r[4:])
        j = int(np.argmax(cls_scores))
        if cls_scores[j] <= conf:
            continue
        x, y, w, h = r[:4]
        cands.append(
            {"i": i, "box": [x - w / 2, y - h / 2, x + w / 2, y + h / 2], "score": cls_scores[j], "class": j}
        )
    cands.sort(key=lambda d: -d["score"])
    kept: list[dict[str, Any]] = []
    for d in cands:
        if any((agnostic or k["class"] == d["class"]) and ref_iou(k["box"], d["box"]) > iou for k in kept):
            continue
        kept.append(d)
    return kept[:max_det]


# --- options ------------------------------------------------------------------------------------

BLAZEFACE_ANCHORS = {
    "num_layers": 4,
    "min_scale": 0.1484375,
    "max_scale": 0.75,
    "input_size_width": 128,
    "input_size_height": 128,
    "anchor_offset_x": 0.5,
    "anchor_offset_y": 0.5,
    "strides": [8, 16, 16, 16],
    "feature_map_width": [],
    "feature_map_height": [],
    "aspect_ratios": [1.0],
    "reduce_boxes_in_lowest_layer": False,
    "interpolated_scale_aspect_ratio": 1.0,
    "fixed_anchor_size": True,
}
# MediaPipe's object detection example (ssdlite mobilenet v2, 320x320): the well-known 2034 anchors
SSD_MOBILENET_ANCHORS = {
    **BLAZEFACE_ANCHORS,
    "num_layers": 6,
    "min_scale": 0.2,
    "max_scale": 0.95,
    "input_size_width": 320,
    "input_size_height": 320,
    "strides": [16, 32, 64, 128, 256, 512],
    "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
    "reduce_boxes_in_lowest_layer": True,
    "fixed_anchor_size": False,
}
# BlazeFace full range: 192x192, one layer of stride 4 -> 48x48 cells x 1 anchor = 2304
FULL_RANGE_ANCHORS = {
    **BLAZEFACE_ANCHORS,
    "num_layers": 1,
    "min_scale": 0.1484375,
    "input_size_width": 192,
    "input_size_height": 192,
    "strides": [4],
    "interpolated_scale_aspect_ratio": 0.0,
}


def detections_opts(**over: Any) -> dict[str, Any]:
    base = {
        "boxes": "regressors",
        "scores": "classificators",
        "num_classes": 1,
        "num_boxes": 896,
        "num_coords": 16,
        "box_coord_offset": 0,
        "keypoint_coord_offset": 4,
        "num_keypoints": 6,
        "num_values_per_keypoint": 2,
        "x_scale": 128.0,
        "y_scale": 128.0,
        "w_scale": 128.0,
        "h_scale": 128.0,
        "apply_exponential_on_box_size": False,
        "reverse_output_order": True,
        "box_format": "xywh",
        "sigmoid_score": True,
        "score_clipping_thresh": 100.0,
        "flip_vertically": False,
        "min_score_thresh": 0.5,
        "max_results": -1,
        "ignore_classes": [],
        "allow_classes": [],
    }
    return {**base, **over}


def nms_opts(**over: Any) -> dict[str, Any]:
    base = {
        "min_suppression_threshold": 0.3,
        "overlap_type": "intersection-over-union",
        "algorithm": "weighted",
        "max_num_detections": -1,
        "min_score_threshold": -1.0,
    }
    return {**base, **over}


# --- anchors ------------------------------------------------------------------------------------


def test_blazeface_front_anchors_by_hand() -> None:
    anchors = ssd_anchors(BLAZEFACE_ANCHORS)
    assert len(anchors) == 896
    # stride 8: a 16x16 grid, 2 anchors per cell (aspect 1.0 and the interpolated one)
    assert anchors[0] == anchors[1] == (0.5 / 16, 0.5 / 16, 1.0, 1.0)
    assert anchors[2] == (1.5 / 16, 0.5 / 16, 1.0, 1.0)
    assert anchors[32] == (0.5 / 16, 1.5 / 16, 1.0, 1.0)  # the second row
    # strides 16, 16, 16 merged: an 8x8 grid of 6 anchors per cell
    assert all(a == (0.0625, 0.0625, 1.0, 1.0) for a in anchors[512:518])
    assert anchors[518] == (0.1875, 0.0625, 1.0, 1.0)
    assert anchors[-1] == (0.9375, 0.9375, 1.0, 1.0)


@pytest.mark.parametrize(
    ("options", "count"),
    [(BLAZEFACE_ANCHORS, 896), (SSD_MOBILENET_ANCHORS, 2034), (FULL_RANGE_ANCHORS, 2304)],
)
def test_anchors_match_the_reference(options: dict[str, Any], count: int) -> None:
    got = np.asarray(anchor_array(options))
    want = np.asarray(ref_anchors(options))
    assert got.shape == (count, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_anchor_sizes_by_hand() -> None:
    # lowest layer reduced: 3 anchors (scale 0.1 ratio 1; scale 0.2 ratios 2 and 0.5)
    a = ssd_anchors(SSD_MOBILENET_ANCHORS)
    assert a[0][2:] == pytest.approx((0.1, 0.1))
    assert a[1][2:] == pytest.approx((0.2 * math.sqrt(2), 0.2 / math.sqrt(2)))
    assert a[2][2:] == pytest.approx((0.2 / math.sqrt(2), 0.2 * math.sqrt(2)))
    assert a[3][:2] == pytest.approx((1.5 / 20, 0.5 / 20))


# --- SSD ----------------------------------------------------------------------------------------


def ssd_raw(rng: np.random.Generator, opts: dict[str, Any], anchors: Any) -> tuple[Any, Any]:
    """Raw boxes that cluster (so NMS has work) and logits of which some pass 0.5."""
    n, c = opts["num_boxes"], opts["num_coords"]
    raw = rng.normal(0, 3, size=(1, n, c)).astype(np.float32)
    raw[0, :, 2:4] = rng.uniform(8, 30, size=(n, 2))  # w, h in input pixels (scale 128)
    scores = rng.normal(-2, 2.5, size=(1, n, opts["num_classes"])).astype(np.float32)
    return raw, scores


def compare(got: Any, want: list[dict[str, Any]], keypoints: bool = True) -> None:
    assert len(got.scores) == len(want), (len(got.scores), len(want))
    np.testing.assert_allclose(got.scores, [d["score"] for d in want], rtol=1e-5)
    np.testing.assert_allclose(got.boxes, np.asarray([d["box"] for d in want]).reshape(-1, 4), atol=2e-5)
    assert got.classes == [d["class"] for d in want]
    if keypoints:
        assert got.keypoints is not None
        np.testing.assert_allclose(
            np.asarray(got.keypoints).reshape(len(want), -1, 2),
            np.asarray([d["keypoints"] for d in want]).reshape(len(want), -1, 2),
            atol=2e-5,
        )


@pytest.mark.parametrize("algorithm", ["default", "weighted"])
@pytest.mark.parametrize("overlap", ["jaccard", "modified-jaccard", "intersection-over-union"])
def test_ssd_with_keypoints_matches_the_reference(algorithm: str, overlap: str) -> None:
    rng = np.random.default_rng(16)
    opts = detections_opts()
    anchors = anchor_array(BLAZEFACE_ANCHORS)
    raw, scores = ssd_raw(rng, opts, anchors)
    nms = nms_opts(algorithm=algorithm, overlap_type=overlap)
    got = nms_mediapipe(decode_ssd(view32(raw), view32(scores), anchors, opts, 0.5), nms)
    want = ref_nms(ref_tensors_to_detections(raw, scores, ref_anchors(BLAZEFACE_ANCHORS), opts, 0.5), nms)
    assert len(want) > 3
    compare(got, want)


@pytest.mark.parametrize(
    "over",
    [
        {"box_format": "yxhw", "reverse_output_order": False},
        {"box_format": "xyxy"},
        {
            "apply_exponential_on_box_size": True,
            "x_scale": 10.0,
            "y_scale": 10.0,
            "w_scale": 5.0,
            "h_scale": 5.0,
        },
        {"num_classes": 4, "ignore_classes": [0], "num_keypoints": 0},
        {"num_classes": 3, "allow_classes": [1, 2], "sigmoid_score": False, "min_score_thresh": 0.0},
        {"max_results": 7, "flip_vertically": True},
        {"box_coord_offset": 2, "keypoint_coord_offset": 6, "num_keypoints": 5},
    ],
)
def test_ssd_options_match_the_reference(over: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    opts = detections_opts(**over)
    anchors = anchor_array(SSD_MOBILENET_ANCHORS)
    opts["num_boxes"] = len(anchors)
    raw = rng.normal(0, 1, size=(1, len(anchors), opts["num_coords"])).astype(np.float32)
    scores = rng.normal(-1, 2, size=(1, len(anchors), opts["num_classes"])).astype(np.float32)
    nms = nms_opts(algorithm="default", max_num_detections=25)
    got = nms_mediapipe(decode_ssd(view32(raw), view32(scores), anchors, opts, opts["min_score_thresh"]), nms)
    want = ref_nms(
        ref_tensors_to_detections(
            raw, scores, ref_anchors(SSD_MOBILENET_ANCHORS), opts, opts["min_score_thresh"]
        ),
        nms,
    )
    assert want
    compare(got, want, keypoints=opts["num_keypoints"] > 0)


@pytest.mark.parametrize("algorithm", ["default", "weighted"])
def test_nothing_over_the_threshold_is_no_detection(algorithm: str) -> None:
    opts = detections_opts()
    anchors = anchor_array(BLAZEFACE_ANCHORS)
    raw, scores = ssd_raw(np.random.default_rng(1), opts, anchors)
    found = nms_mediapipe(
        decode_ssd(view32(raw), view32(scores), anchors, opts, 1.0), nms_opts(algorithm=algorithm)
    )
    assert found == ([], [], [], [])


def test_weighted_nms_with_the_default_threshold_stops_after_one_as_mediapipe() -> None:
    # a box is never more than 1.0 similar to itself: nothing is merged, so MediaPipe's loop ends
    rng = np.random.default_rng(3)
    opts = detections_opts()
    anchors = anchor_array(BLAZEFACE_ANCHORS)
    raw, scores = ssd_raw(rng, opts, anchors)
    nms = nms_opts(min_suppression_threshold=1.0)
    got = nms_mediapipe(decode_ssd(view32(raw), view32(scores), anchors, opts, 0.5), nms)
    assert len(got.scores) == 1


def quantize(x: Any, dtype: Any) -> tuple[Any, dict[str, Any]]:
    lo, hi = float(x.min()), float(x.max())
    info = np.iinfo(dtype)
    scale = (hi - lo) / (info.max - info.min)
    zero = round(info.min - lo / scale)
    q = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return q, {"dtype": np.dtype(dtype).name, "scale": scale, "zero_point": zero}


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_ssd_quantized_outputs_are_dequantized_first(dtype: Any) -> None:
    rng = np.random.default_rng(11)
    opts = detections_opts()
    anchors = anchor_array(BLAZEFACE_ANCHORS)
    raw, scores = ssd_raw(rng, opts, anchors)
    qb, ib = quantize(raw, dtype)
    qs, is_ = quantize(scores, dtype)
    spec = {"decoder": "ssd", "anchors": BLAZEFACE_ANCHORS, "detections": opts, "nms": nms_opts()}
    outputs = [{"name": "regressors", **ib}, {"name": "classificators", **is_}]
    got = Detector(spec, outputs, (128, 128), None).detect([tensor(qb), tensor(qs)])
    real_b = (qb.astype(np.float64) - ib["zero_point"]) * ib["scale"]
    real_s = (qs.astype(np.float64) - is_["zero_point"]) * is_["scale"]
    want = ref_nms(
        ref_tensors_to_detections(real_b, real_s, ref_anchors(BLAZEFACE_ANCHORS), opts, 0.5), nms_opts()
    )
    assert want
    compare(got, sorted(want, key=lambda d: -d["score"]))


# --- YOLO ---------------------------------------------------------------------------------------


def yolo_pred(rng: np.random.Generator, layout: str, n: int, classes: int, size: float) -> Any:
    """Boxes clustered around a few objects (so NMS has work); ``size`` 1 for normalized, 320 pixels."""
    centres = rng.uniform(0.2, 0.8, size=(5, 2))
    pick = rng.integers(0, 5, size=n)
    xy = centres[pick] + rng.normal(0, 0.02, size=(n, 2))
    wh = rng.uniform(0.1, 0.3, size=(n, 2))
    boxes = np.concatenate([xy, wh], axis=1) * size
    cls = rng.uniform(0, 1, size=(n, classes)) ** 3
    rows = [boxes, rng.uniform(0, 1, size=(n, 1)), cls] if layout == "v5" else [boxes, cls]
    pred = np.concatenate(rows, axis=1).astype(np.float32)
    return (pred if layout == "v5" else pred.T)[None]


@pytest.mark.parametrize("layout", ["v5", "v8"])
@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize(
    ("boxes", "size"), [("normalized", 1.0), ("pixels", 320.0), ("auto", 320.0), ("auto", 1.0)]
)
def test_yolo_matches_the_reference(layout: str, agnostic: bool, boxes: str, size: float) -> None:
    rng = np.random.default_rng(8)
    pred = yolo_pred(rng, layout, 2100, 3, size)
    opts = {
        "layout": layout,
        "boxes": boxes,
        "class_agnostic": agnostic,
        "iou_threshold": 0.45,
        "max_detections": 40,
    }
    got = decode_yolo(view32(pred), pred.shape[-2:], opts, 320, 320, 0.25)
    want = ref_yolo(pred, layout, 0.25, 0.45, agnostic, 40)
    assert len(want) > 5
    for d in want:
        d["box"] = [v / size for v in d["box"]]
    compare(got, want, keypoints=False)


def test_yolo_int8_through_the_detector() -> None:
    rng = np.random.default_rng(9)
    pred = yolo_pred(rng, "v8", 500, 2, 1.0)
    q, info = quantize(pred, np.int8)
    spec = {
        "decoder": "yolo",
        "tensor": "out",
        "yolo": {
            "layout": "v8",
            "boxes": "normalized",
            "class_agnostic": False,
            "score_threshold": 0.3,
            "iou_threshold": 0.5,
            "max_detections": 300,
            "num_classes": 2,
        },
    }
    got = Detector(spec, [{"name": "out", **info}], (320, 320), None).detect([tensor(q)])
    real = (q.astype(np.float64) - info["zero_point"]) * info["scale"]
    compare(got, ref_yolo(real, "v8", 0.3, 0.5, False, 300), keypoints=False)


# --- TFLite_Detection_PostProcess ---------------------------------------------------------------


def test_postprocess_outputs() -> None:
    boxes = np.asarray(
        [[[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.2, 0.9], [0.0, 0.0, 1.0, 1.0], [0, 0, 0, 0]]], np.float32
    )
    classes = np.asarray([[2.0, 0.0, 1.0, 0.0]], np.float32)
    scores = np.asarray([[0.9, 0.8, 0.4, 0.0]], np.float32)
    count = np.asarray([3.0], np.float32)
    opts = {"min_score_thresh": None, "max_results": -1, "ignore_classes": [], "allow_classes": []}
    raw = [view32(boxes), view32(classes), view32(scores), view32(count)]
    got = decode_postprocess(*raw, opts, None)
    # the second box has ymax < ymin: dropped, as MediaPipe drops negative sizes; the fourth is past count
    np.testing.assert_allclose(got.boxes, [[0.2, 0.1, 0.6, 0.5], [0.0, 0.0, 1.0, 1.0]])
    assert got.classes == [2, 1]
    got = decode_postprocess(*raw, {**opts, "ignore_classes": [2]}, 0.3)
    assert got.classes == [1]
    got = decode_postprocess(*raw, opts, 0.5)
    assert got.scores == pytest.approx([0.9])


def test_detector_answer_for_the_detection_op() -> None:
    spec = {
        "decoder": "tflite-detection",
        "detections": {
            "boxes": "b",
            "classes": "c",
            "scores": "s",
            "count": "n",
            "min_score_thresh": 0.5,
            "max_results": -1,
            "ignore_classes": [],
            "allow_classes": [],
        },
    }
    outputs = [{"name": name, **FLOAT} for name in ("s", "b", "n", "c")]
    values = [
        tensor(np.asarray([[0.6, 0.95]], np.float32)),
        tensor(np.asarray([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.5, 0.5]]], np.float32)),
        tensor(np.asarray([2.0], np.float32)),
        tensor(np.asarray([[1.0, 0.0]], np.float32)),
    ]
    det = Detector(spec, outputs, (100, 100), ["cat", "dog"])
    frame = Frame(400, 200, Placement(100, 100, 0, 0))  # stretched
    answer = det.answer(values, frame)
    assert answer == [
        {"index": 0, "label": "cat", "score": 0.95, "box": [0.0, 0.0, 200.0, 100.0]},
        {"index": 1, "label": "dog", "score": 0.6, "box": [80.0, 20.0, 240.0, 100.0]},
    ]
    assert [d["index"] for d in det.answer(values, frame, score_threshold=0.9)] == [0]


# --- back to the image --------------------------------------------------------------------------


def test_letterbox_mapping_with_known_geometry() -> None:
    # 200x100 into 100x100: scaled to 100x50, 25 rows of padding above and below
    place = placement(200, 100, 100, 100, "letterbox")
    assert place == Placement(100, 50, 0, 25)
    frame = Frame(200, 100, place)
    box = [(0.1, 0.25), (0.5, 0.75)]  # tensor pixels (10, 25) - (50, 75)
    np.testing.assert_allclose(to_image(box, frame, 100, 100), [[20, 0], [100, 100]])
    # in the padding: clipped to the image
    np.testing.assert_allclose(to_image([(0.5, 0.1)], frame, 100, 100), [[100, 0]])
    np.testing.assert_allclose(to_image([(1.0, 0.9)], frame, 100, 100), [[200, 100]])


def test_center_crop_mapping_with_known_geometry() -> None:
    # 200x100 into 100x100: already covers at scale 1, the middle 100 columns are kept
    place = placement(200, 100, 100, 100, "center-crop")
    assert place == Placement(200, 100, -50, 0)
    frame = Frame(200, 100, place)
    box = [(0.1, 0.25), (0.5, 0.75)]
    np.testing.assert_allclose(to_image(box, frame, 100, 100), [[60, 25], [100, 75]])
    # 300x600 into 100x50 (w x h): scale max(1/3, 1/12) -> 100x200, 75 rows cut above
    place = placement(300, 600, 100, 50, "center-crop")
    assert place == Placement(100, 200, 0, -75)
    np.testing.assert_allclose(to_image([(0.5, 0.5)], Frame(300, 600, place), 100, 50), [[150, 300]])


def test_stretch_mapping() -> None:
    frame = Frame(640, 480, placement(640, 480, 128, 128, "stretch"))
    np.testing.assert_allclose(to_image([(0.25, 0.5)], frame, 128, 128), [[160, 240]])
