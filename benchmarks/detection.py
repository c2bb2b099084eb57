"""Decode + NMS time of the ``ssd`` decoder for 2,304 anchors (MediaPipe's BlazeFace full-range
layout: 192x192, one stride-4 layer, 16 values per box with 6 keypoints, weighted NMS), the goal being
<= 1 ms on the build machine, and of the ``yolo`` decoder for YOLOv8n's [1, 84, 8400]:

    .venv/bin/python benchmarks/detection.py [--runs 500]

It times ``Detector.detect`` (dequantize, decode, threshold, NMS, sort; not the interpreter) on
synthetic raw outputs: a "typical" frame (3 faces, each a cluster of anchors over the threshold, the
rest background) and a "busy" one (a threshold low enough to pass ~10% of the anchors), float32 and
int8; YOLO with 60 objects among faint scores. Beside the runtime's plain-Python decoders, the NumPy
ones they replaced (tests/unit/numpy_detection.py), interleaved, and the ratio of the two. Prints the
median and 90th percentile of each; not a timed unit test (the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgebundle.runtime.detection import Detector  # noqa: E402
from tests.unit import numpy_detection  # noqa: E402
from tests.unit.arrays import tensor  # noqa: E402

ANCHORS = {
    "num_layers": 1,
    "min_scale": 0.1484375,
    "max_scale": 0.75,
    "input_size_width": 192,
    "input_size_height": 192,
    "anchor_offset_x": 0.5,
    "anchor_offset_y": 0.5,
    "strides": [4],
    "feature_map_width": [],
    "feature_map_height": [],
    "aspect_ratios": [1.0],
    "reduce_boxes_in_lowest_layer": False,
    "interpolated_scale_aspect_ratio": 0.0,
    "fixed_anchor_size": True,
}
DETECTIONS = {
    "boxes": "regressors",
    "scores": "classificators",
    "num_classes": 1,
    "num_boxes": 2304,
    "num_coords": 16,
    "box_coord_offset": 0,
    "keypoint_coord_offset": 4,
    "num_keypoints": 6,
    "num_values_per_keypoint": 2,
    "x_scale": 192.0,
    "y_scale": 192.0,
    "w_scale": 192.0,
    "h_scale": 192.0,
    "apply_exponential_on_box_size": False,
    "reverse_output_order": True,
    "box_format": "xywh",
    "sigmoid_score": True,
    "score_clipping_thresh": 100.0,
    "flip_vertically": False,
    "min_score_thresh": 0.6,
    "max_results": -1,
    "ignore_classes": [],
    "allow_classes": [],
}
NMS = {
    "min_suppression_threshold": 0.3,
    "overlap_type": "intersection-over-union",
    "algorithm": "weighted",
    "max_num_detections": -1,
    "min_score_threshold": -1.0,
}


def frame(rng: np.random.Generator, faces: int, background: float) -> tuple[Any, Any]:
    """Raw outputs: boxes relative to their anchor (in input pixels), logits; ``faces`` clusters."""
    n = DETECTIONS["num_boxes"]
    raw = rng.normal(0, 2, size=(1, n, 16)).astype(np.float32)
    raw[0, :, 2:4] = rng.uniform(20, 40, size=(n, 2))
    logits = rng.normal(background, 1.5, size=(1, n, 1)).astype(np.float32)
    for _ in range(faces):
        cx, cy = rng.integers(4, 44, size=2)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                i = (cy + dy) * 48 + (cx + dx)
                logits[0, i, 0] = rng.uniform(1, 4)
                raw[0, i, 0:2] = (-dx * 4, -dy * 4)  # every anchor of the cluster points at the face
                raw[0, i, 2:4] = (60, 60)
    return raw, logits


def quantized(x: Any) -> tuple[Any, dict[str, Any]]:
    scale = float(np.abs(x).max()) / 127
    return np.clip(np.round(x / scale), -128, 127).astype(np.int8), {
        "dtype": "int8",
        "scale": scale,
        "zero_point": 0,
    }


def measure(spec: dict[str, Any], outputs: list[Any], size: int, values: list[Any], runs: int) -> list[Any]:
    """(median ms, p90 ms, detections) of the plain-Python decoder and of the NumPy one, interleaved."""
    plain = Detector(spec, outputs, (size, size), None)
    numpy = numpy_detection.Detector(spec, outputs, (size, size), None)
    # the outputs as each decoder gets them from its session, made before the clock starts
    tensors = [tensor(v) for v in values]
    calls = [lambda: plain.detect(tensors), lambda: numpy.detect(values)]
    found = [len(call().scores) for call in calls]
    times: list[list[float]] = [[], []]
    for _ in range(runs):
        for n, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[n].append((time.perf_counter() - start) * 1000)
    out = []
    for n in range(2):
        times[n].sort()
        out.append((statistics.median(times[n]), times[n][int(len(times[n]) * 0.9)], found[n]))
    return out


def yolo_frame(rng: np.random.Generator) -> Any:
    n, classes = 8400, 80
    xywh = np.concatenate([rng.uniform(0, 1, (n, 2)), rng.uniform(0.02, 0.3, (n, 2))], axis=1)
    scores = (rng.uniform(0, 1, (n, classes)) ** 12) * 0.2
    objects = rng.choice(n, 60, replace=False)
    scores[objects, rng.integers(0, classes, 60)] = rng.uniform(0.3, 0.9, 60)
    return np.concatenate([xywh, scores], axis=1).astype(np.float32).T[None]


def report(case: str, kind: str, passing: int | str, results: list[Any]) -> None:
    (median, p90, found), (np_median, np_p90, np_found) = results
    assert found == np_found, (found, np_found)
    print(
        f"  {case:8s} {kind:8s} {passing!s:>5s} over the threshold -> {found:2d} detections: "
        f"median {median:.3f}  p90 {p90:.3f}  "
        f"(NumPy {np_median:.3f} / {np_p90:.3f}: {median / np_median:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    spec = {"decoder": "ssd", "anchors": ANCHORS, "detections": DETECTIONS, "nms": NMS}
    rng = np.random.default_rng(2304)
    float_info = {"dtype": "float32", "scale": 0.0, "zero_point": 0}
    print(f"decode + NMS, {DETECTIONS['num_boxes']} anchors, {args.runs} runs (ms)")
    for case, faces, background in (("typical", 3, -6.0), ("busy", 8, -2.5)):
        raw, logits = frame(rng, faces, background)
        passing = int((1 / (1 + np.exp(-logits)) >= DETECTIONS["min_score_thresh"]).sum())
        for kind in ("float32", "int8"):
            if kind == "float32":
                outputs, values = [float_info, float_info], [raw, logits]
            else:
                (qr, ir), (ql, il) = quantized(raw), quantized(logits)
                outputs, values = [ir, il], [qr, ql]
            outputs = [
                {**o, "name": name} for o, name in zip(outputs, ("regressors", "classificators"), strict=True)
            ]
            report(case, kind, passing, measure(spec, outputs, 192, values, args.runs))
    yolo = {
        "layout": "v8",
        "boxes": "auto",
        "class_agnostic": False,
        "iou_threshold": 0.7,
        "max_detections": 300,
        "score_threshold": 0.25,
    }
    pred = yolo_frame(rng)
    print(f"YOLOv8 [1, 84, 8400], {args.runs} runs (ms)")
    for kind in ("float32", "int8"):
        if kind == "float32":
            outputs, values = [{**float_info, "name": "out"}], [pred]
        else:
            q, info = quantized(pred)
            outputs, values = [{**info, "name": "out"}], [q]
        spec = {"decoder": "yolo", "tensor": "out", "yolo": yolo}
        report("yolov8", kind, "", measure(spec, outputs, 640, values, max(args.runs // 5, 20)))


if __name__ == "__main__":
    main()
