"""SSD anchors as MediaPipe's SsdAnchorsCalculator generates them (ssd_anchors_calculator.cc,
``GenerateAnchors``; the multiscale variant is not supported).

Standard library only: the builder calls it too, to check at build time that the recipe's anchor
options give as many anchors as the model has boxes. The runtime calls it once per session.
"""

from __future__ import annotations

import math
from typing import Any

Anchor = tuple[float, float, float, float]  # x_center, y_center, w, h; relative to the input


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1)


def ssd_anchors(options: dict[str, Any]) -> list[Anchor]:
    """The anchors for resolved ``[output.anchors]`` options (every key present, input size set).

    Layers with the same stride are merged into one grid, their anchors interleaved per cell, as
    MediaPipe does (BlazeFace's strides 8, 16, 16, 16 give a 16x16 grid of 2 anchors and an 8x8 grid
    of 6: 896)."""
    strides: list[int] = options["strides"]
    num_layers: int = options["num_layers"]
    min_scale, max_scale = options["min_scale"], options["max_scale"]
    feature_w: list[int] = options["feature_map_width"]
    feature_h: list[int] = options["feature_map_height"]
    interpolated = options["interpolated_scale_aspect_ratio"]
    anchors: list[Anchor] = []
    layer = 0
    while layer < num_layers:
        ratios: list[float] = []
        scales: list[float] = []
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            scale = _scale(min_scale, max_scale, last, len(strides))
            if last == 0 and options["reduce_boxes_in_lowest_layer"]:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                for ratio in options["aspect_ratios"]:
                    ratios.append(ratio)
                    scales.append(scale)
                if interpolated > 0.0:
                    following = (
                        1.0
                        if last == len(strides) - 1
                        else _scale(min_scale, max_scale, last + 1, len(strides))
                    )
                    scales.append(math.sqrt(scale * following))
                    ratios.append(interpolated)
            last += 1
        sizes = [(s * math.sqrt(r), s / math.sqrt(r)) for s, r in zip(scales, ratios, strict=True)]
        if feature_h:
            rows, cols = feature_h[layer], feature_w[layer]
        else:
            rows = math.ceil(options["input_size_height"] / strides[layer])
            cols = math.ceil(options["input_size_width"] / strides[layer])
        fixed = options["fixed_anchor_size"]
        for y in range(rows):
            y_center = (y + options["anchor_offset_y"]) / rows
            for x in range(cols):
                x_center = (x + options["anchor_offset_x"]) / cols
                for w, h in sizes:
                    anchors.append((x_center, y_center, 1.0, 1.0) if fixed else (x_center, y_center, w, h))
        if last == layer:  # MediaPipe loops forever here; the recipe check refuses such options
            raise ValueError("anchor options give no layer to advance to (strides shorter than num_layers)")
        layer = last
    return anchors
