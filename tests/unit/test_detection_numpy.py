"""The plain-Python decoders against the NumPy ones they replaced (tests/unit/numpy_detection.py), on
the same raw outputs: bit for bit where no exp is involved; where one is (sigmoid scores, exponential
box sizes), within one float32 rounding, since NumPy's float32 exp is its own approximation and the
runtime's is correctly rounded. Outputs include NaN, infinities and zero scores (weights of sum 0)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgebundle.runtime import detection, nms
from tests.unit import numpy_detection
from tests.unit.arrays import FLOAT, tensor
from tests.unit.test_detection import (
    BLAZEFACE_ANCHORS,
    SSD_MOBILENET_ANCHORS,
    detections_opts,
    nms_opts,
    quantize,
    ssd_raw,
    yolo_pred,
)


def same(got: nms.Detections, want: numpy_detection.Detections, exact: bool) -> None:
    assert got.classes == want.classes.tolist()
    tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 3e-7, "atol": 3e-8}
    np.testing.assert_allclose(np.float32(got.scores), want.scores, **tol)
    np.testing.assert_allclose(np.float32(got.boxes).reshape(-1, 4), want.boxes, **tol)
    if want.keypoints is None:
        assert got.keypoints is None
    else:
        assert got.keypoints is not None
        np.testing.assert_allclose(
            np.float32(got.keypoints).reshape(want.keypoints.shape), want.keypoints, **tol
        )


def both(
    spec: dict[str, Any], outputs: list[dict[str, Any]], size: int, values: list[Any], exact: bool
) -> int:
    want = numpy_detection.Detector(spec, outputs, (size, size), None).detect(values)  # type: ignore[arg-type]
    got = detection.Detector(spec, outputs, (size, size), None).detect([tensor(v) for v in values])  # type: ignore[arg-type]
    same(got, want, exact)
    return len(got.scores)


def spoil(rng: np.random.Generator, arr: Any, share: float = 0.01) -> Any:
    """Some elements NaN, +inf or -inf."""
    out = arr.copy()
    flat = out.reshape(-1)
    pick = rng.choice(flat.size, max(1, int(flat.size * share)), replace=False)
    flat[pick] = rng.choice(np.float32([np.nan, np.inf, -np.inf]), pick.size)
    return out


SSD_CASES = [
    {},
    {"sigmoid_score": False, "min_score_thresh": 0.0, "num_classes": 3, "allow_classes": [1, 2]},
    {"sigmoid_score": False, "min_score_thresh": -0.5, "num_classes": 2},
    {"box_format": "xyxy"},
    {"box_format": "yxhw", "apply_exponential_on_box_size": True, "w_scale": 5.0, "h_scale": 5.0},
    {"num_classes": 4, "ignore_classes": [0], "num_keypoints": 0, "score_clipping_thresh": 1.5},
    {"max_results": 7, "flip_vertically": True, "score_clipping_thresh": None},
    {"min_score_thresh": None, "num_classes": 2},
    {"min_score_thresh": 0.999999},
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's, on NaN and infinities
@pytest.mark.parametrize("algorithm", ["default", "weighted"])
@pytest.mark.parametrize("overlap", ["jaccard", "modified-jaccard", "intersection-over-union"])
@pytest.mark.parametrize("case", range(len(SSD_CASES)))
def test_ssd(algorithm: str, overlap: str, case: int) -> None:
    rng = np.random.default_rng(case)
    opts = detections_opts(**SSD_CASES[case])
    anchors = SSD_MOBILENET_ANCHORS if opts["num_classes"] > 2 else BLAZEFACE_ANCHORS
    opts["num_boxes"] = len(numpy_detection.anchor_array(anchors))
    raw, scores = ssd_raw(rng, opts, None)
    spec = {
        "decoder": "ssd",
        "anchors": anchors,
        "detections": opts,
        "nms": nms_opts(algorithm=algorithm, overlap_type=overlap),
    }
    names = [{"name": "regressors"}, {"name": "classificators"}]
    exact = not opts["sigmoid_score"] and not opts["apply_exponential_on_box_size"]
    found = both(spec, [{**n, **FLOAT} for n in names], 128, [raw, scores], exact)
    assert found or opts["min_score_thresh"] == 0.999999
    both(spec, [{**n, **FLOAT} for n in names], 128, [spoil(rng, raw), spoil(rng, scores)], exact)
    for dtype in (np.int8, np.uint8):
        (qb, ib), (qs, is_) = quantize(raw, dtype), quantize(scores, dtype)
        both(spec, [{**names[0], **ib}, {**names[1], **is_}], 128, [qb, qs], exact)


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # the point
def test_weighted_clusters_of_zero_weight_are_nan_as_numpy_divides() -> None:
    opts = detections_opts(sigmoid_score=False, min_score_thresh=None, num_keypoints=0)
    rng = np.random.default_rng(4)
    raw, _ = ssd_raw(rng, opts, None)
    scores = np.zeros((1, 896, 1), np.float32)
    spec = {"decoder": "ssd", "anchors": BLAZEFACE_ANCHORS, "detections": opts, "nms": nms_opts()}
    outputs = [{"name": "regressors", **FLOAT}, {"name": "classificators", **FLOAT}]
    assert both(spec, outputs, 128, [raw, scores], exact=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("layout", ["v5", "v8"])
@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize(
    ("boxes", "size"), [("normalized", 1.0), ("pixels", 320.0), ("auto", 320.0), ("auto", 1.0)]
)
def test_yolo(layout: str, agnostic: bool, boxes: str, size: float) -> None:
    rng = np.random.default_rng(12)
    pred = yolo_pred(rng, layout, 2100, 5, size)
    yolo = {
        "layout": layout,
        "boxes": boxes,
        "class_agnostic": agnostic,
        "iou_threshold": 0.45,
        "max_detections": 300,
        "score_threshold": 0.25,
    }
    spec = {"decoder": "yolo", "tensor": "out", "yolo": yolo}
    assert both(spec, [{"name": "out", **FLOAT}], 320, [pred], exact=True) > 5
    both(spec, [{"name": "out", **FLOAT}], 320, [spoil(rng, pred, 0.001)], exact=True)
    for dtype in (np.int8, np.uint8):
        q, info = quantize(pred, dtype)
        both(spec, [{"name": "out", **info}], 320, [q], exact=True)


@pytest.mark.parametrize("threshold", [0.0, -0.25, 0.5, 0.9])
def test_yolo_thresholds_and_ties(threshold: float) -> None:
    # scores rounded to a few values: many ties, for the first-maximum and stable-order rules
    rng = np.random.default_rng(3)
    pred = yolo_pred(rng, "v8", 900, 4, 1.0)
    pred[0, 4:] = np.round(pred[0, 4:] * 4) / 4
    yolo = {
        "layout": "v8",
        "boxes": "auto",
        "class_agnostic": False,
        "iou_threshold": 0.5,
        "max_detections": 50,
    }
    spec = {"decoder": "yolo", "tensor": "out", "yolo": {**yolo, "score_threshold": threshold}}
    both(spec, [{"name": "out", **FLOAT}], 320, [pred], exact=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    "over",
    [{}, {"ignore_classes": [1]}, {"allow_classes": [0, 2], "max_results": 3}, {"min_score_thresh": None}],
)
def test_postprocess(over: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    n = 40
    yx = rng.uniform(0, 0.8, (1, n, 2))
    boxes = np.concatenate([yx, yx + rng.uniform(-0.05, 0.2, (1, n, 2))], axis=2).astype(np.float32)
    classes = rng.integers(0, 4, (1, n)).astype(np.float32)
    scores = np.sort(rng.uniform(0, 1, (1, n)).astype(np.float32))[:, ::-1].copy()
    count = np.float32([30])
    opts = {"min_score_thresh": 0.3, "max_results": -1, "ignore_classes": [], "allow_classes": [], **over}
    opts.update(boxes="b", classes="c", scores="s", count="n")
    spec = {"decoder": "tflite-detection", "detections": opts}
    outputs = [{"name": name, **FLOAT} for name in "bcsn"]
    assert both(spec, outputs, 300, [boxes, classes, scores, count], exact=True)
    both(spec, outputs, 300, [spoil(rng, boxes, 0.05), classes, spoil(rng, scores, 0.05), count], exact=True)
