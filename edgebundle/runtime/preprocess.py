"""Image -> input tensor, exactly as the recipe says:

decode with Pillow (EXIF orientation applied), convert to the recipe's color, resize to the model's
height x width with the recipe's filter and mode, float32, (x - mean) / std, quantize with the model's
own scale/zero point when the input is an integer tensor (round half to even, clip), lay out as the
model wants (NHWC/NCHW) and add the batch dimension.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .geometry import image_geometry, placement

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageError(Exception):
    """The input is missing, not an image, or corrupt."""


def decode(data: bytes | str) -> Image.Image:
    """Open and fully decode an image from a path or bytes, with EXIF orientation applied."""
    try:
        source: Any = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(source) as img:
            img.load()
            oriented = ImageOps.exif_transpose(img)
            return oriented if oriented is not None else img.copy()
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        # Pillow raises UnidentifiedImageError (an OSError) for non-images and OSError/SyntaxError
        # for truncated or broken files.
        raise ImageError(_pil_message(exc)) from None


def _pil_message(exc: BaseException) -> str:
    # Pillow appends the file name or a "<_io.BytesIO object at 0x...>" repr: callers name the input.
    if "cannot identify image file" in str(exc):
        return "cannot identify image file (not an image, or a format this binary does not read)"
    return str(exc) or type(exc).__name__


def to_tensor(img: Image.Image, spec: dict[str, Any], tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    """Turn a decoded image into the value for one input tensor (see the module docstring)."""
    geo = image_geometry(tensor["shape"], spec.get("layout"))
    color = spec["color"]
    img = img.convert("L" if color == "L" else "RGB")
    img = _resize(img, geo.width, geo.height, spec)
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if color == "BGR":
        arr = arr[:, :, ::-1]
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    arr = (arr - mean) / std
    if geo.channels != arr.shape[2]:  # the builder refuses such recipes; never feed garbage
        raise ValueError(f"model wants {geo.channels} channels, recipe gives {arr.shape[2]}")
    if geo.layout in ("NCHW", "CHW"):
        arr = arr.transpose(2, 0, 1)
    elif geo.layout == "HW":
        arr = arr[:, :, 0]
    arr = quantize(arr, tensor)
    if geo.layout in ("NHWC", "NCHW"):
        arr = arr[None, ...]
    return np.ascontiguousarray(arr)


def quantize(arr: np.ndarray[Any, Any], tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    """Real values -> the tensor's dtype: quantized with its scale/zero point when it has one."""
    dtype = np.dtype(tensor["dtype"])
    if dtype.kind == "f":
        return arr.astype(dtype)
    scale, zero_point = tensor["scale"], tensor["zero_point"]
    arr = np.round(arr / np.float32(scale)) + zero_point if scale else np.round(arr)
    info = np.iinfo(dtype)
    return np.clip(arr, info.min, info.max).astype(dtype)


def _resize(img: Image.Image, width: int, height: int, spec: dict[str, Any]) -> Image.Image:
    resample = FILTERS[spec["interpolation"]]
    mode = spec["resize"]
    if img.size == (width, height):
        return img
    place = placement(img.width, img.height, width, height, mode)
    resized = img.resize((place.width, place.height), resample)
    if mode == "letterbox":
        pad = round(spec.get("pad_value", 0.0))
        canvas = Image.new(img.mode, (width, height), pad if img.mode == "L" else (pad,) * 3)
        canvas.paste(resized, (place.left, place.top))
        return canvas
    if mode == "center-crop":
        return resized.crop((-place.left, -place.top, -place.left + width, -place.top + height))
    return resized
