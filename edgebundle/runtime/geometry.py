"""Where height, width and channels sit in an image input tensor. Standard library only: the builder
uses it too, to validate a recipe against a model before anything is built."""

from __future__ import annotations

import math
from typing import NamedTuple


class Geometry(NamedTuple):
    layout: str  # NHWC, NCHW, HWC, CHW or HW: the tensor's full layout
    height: int
    width: int
    channels: int


def image_geometry(shape: list[int], layout: str | None) -> Geometry:
    """Read H, W, C from an input shape; ``layout`` is the recipe's NHWC/NCHW or None to infer.

    Raises ValueError with a readable reason when the shape cannot hold an image.
    """
    dims = list(shape)
    if any(d <= 0 for d in dims):
        raise ValueError(f"input shape {dims} has dynamic image dimensions; give the model a fixed size")
    if len(dims) == 4:
        if dims[0] != 1:
            raise ValueError(f"input shape {dims} has batch size {dims[0]}; edgebundle feeds batch 1")
        channels_last = _channels_last(dims[1], dims[3], layout)
        if channels_last:
            return Geometry("NHWC", dims[1], dims[2], dims[3])
        return Geometry("NCHW", dims[2], dims[3], dims[1])
    if len(dims) == 3:
        channels_last = _channels_last(dims[0], dims[2], layout)
        if channels_last:
            return Geometry("HWC", dims[0], dims[1], dims[2])
        return Geometry("CHW", dims[1], dims[2], dims[0])
    if len(dims) == 2:
        return Geometry("HW", dims[0], dims[1], 1)
    raise ValueError(f"input shape {dims} is not an image (expected rank 2, 3 or 4)")


def _channels_last(first: int, last: int, layout: str | None) -> bool:
    if layout is not None:
        return layout == "NHWC"
    # Infer: channels are the small axis (1, 3 or 4); ambiguous shapes default to channels last,
    # which is what TFLite converters produce.
    return not (first in (1, 3, 4) and last not in (1, 3, 4))


class Placement(NamedTuple):
    """Where a resized image lands in the model's input: scaled to ``width`` x ``height`` pixels
    with its top-left corner at (``left``, ``top``) of the tensor (negative when center-crop cuts it)."""

    width: int
    height: int
    left: int
    top: int


def placement(src_w: int, src_h: int, dst_w: int, dst_h: int, mode: str) -> Placement:
    """How the recipe's resize (stretch, letterbox, center-crop) places a ``src_w`` x ``src_h`` image
    in a ``dst_w`` x ``dst_h`` input. The preprocessing resizes with it and the detection decoders map
    boxes back through it, so both always agree."""
    if (src_w, src_h) == (dst_w, dst_h) or mode == "stretch":
        return Placement(dst_w, dst_h, 0, 0)
    if mode == "letterbox":
        scale = min(dst_w / src_w, dst_h / src_h)
        nw, nh = max(1, round(src_w * scale)), max(1, round(src_h * scale))
        return Placement(nw, nh, (dst_w - nw) // 2, (dst_h - nh) // 2)
    # center-crop: scale so the image covers the target, then cut the middle out.
    scale = max(dst_w / src_w, dst_h / src_h)
    nw, nh = max(dst_w, math.ceil(src_w * scale - 1e-6)), max(dst_h, math.ceil(src_h * scale - 1e-6))
    return Placement(nw, nh, -((nw - dst_w) // 2), -((nh - dst_h) // 2))


class Frame(NamedTuple):
    """One image as it was fed: its size (after EXIF orientation) and where the resize placed it in
    the model's input, to map detections back to it."""

    width: int
    height: int
    place: Placement
