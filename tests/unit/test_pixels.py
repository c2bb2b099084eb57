"""The lookup-table tensor builder (runtime/pixels.py) against the NumPy expression it replaced: bit
for bit, for every 8-bit value, every dtype, quantized or not, layouts and colour orders."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgebundle.runtime.pixels import element, table
from edgebundle.runtime.preprocess import to_tensor


def numpy_tensor(
    pixels: np.ndarray[Any, Any], mean: list[float], std: list[float], tensor: dict[str, Any]
) -> np.ndarray[Any, Any]:
    """What the runtime computed with NumPy before (preprocess.to_tensor and quantize, up to 2026-12)."""
    arr = pixels.astype(np.float32)
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    dtype = np.dtype(tensor["dtype"])
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return arr.astype(dtype)
    scale, zero_point = tensor["scale"], tensor["zero_point"]
    arr = np.round(arr / np.float32(scale)) + zero_point if scale else np.round(arr)
    info = np.iinfo(dtype)
    return np.clip(arr, info.min, info.max).astype(dtype)


def spec_tensor(
    dtype: str, scale: float = 0.0, zp: int = 0, shape: list[int] | None = None
) -> dict[str, Any]:
    return {
        "name": "x",
        "index": 0,
        "shape": shape or [256],
        "dtype": dtype,
        "scale": scale,
        "zero_point": zp,
    }


CASES = [
    ("float32", 0.0, 0, [0.0], [1.0]),
    ("float32", 0.0, 0, [127.5], [127.5]),
    ("float32", 0.0, 0, [123.675], [58.395]),
    ("float32", 0.0, 0, [0.1], [0.3]),
    ("float32", 0.0, 0, [-7.77], [1e-3]),
    ("float16", 0.0, 0, [0.0], [255.0]),
    ("float16", 0.0, 0, [0.0], [1e-3]),  # beyond float16: infinity, as NumPy's cast
    ("float64", 0.0, 0, [1 / 3], [0.7]),
    ("uint8", 0.0, 0, [0.0], [1.0]),
    ("uint8", 1 / 255, 0, [0.0], [255.0]),
    ("int8", 0.0078125, -1, [127.5], [127.5]),
    ("int8", 0.5, 3, [0.0], [1.0]),
    ("int8", 0.0, 0, [100.0], [1.0]),
    ("int16", 0.001, 7, [33.3], [2.2]),
    ("int32", 1e-4, -5, [0.0], [1.0]),
    ("uint8", 0.37, 250, [12.0], [0.3]),
]


@pytest.mark.parametrize(("dtype", "scale", "zp", "mean", "std"), CASES)
def test_every_8bit_value_as_numpy_computes_it(
    dtype: str, scale: float, zp: int, mean: list[float], std: list[float]
) -> None:
    tensor = spec_tensor(dtype, scale, zp)
    values = np.arange(256, dtype=np.uint8)
    want = numpy_tensor(values, mean, std, tensor)
    got = b"".join(table(mean[0], std[0], tensor))  # type: ignore[arg-type]
    assert got == want.tobytes()


def test_random_reals_quantize_as_numpy() -> None:
    rng = np.random.default_rng(7)
    reals = np.concatenate([rng.normal(0, 300, 2000), np.arange(-10, 10, 0.5)]).astype(np.float32)
    for dtype, scale, zp in [("int8", 0.5, 0), ("uint8", 0.25, 128), ("int16", 0.01, -3), ("int8", 0.0, 0)]:
        tensor = spec_tensor(dtype, scale, zp)
        want = numpy_tensor(reals, [0.0], [1.0], tensor)
        got = b"".join(element(float(r), tensor) for r in reals)  # type: ignore[arg-type]
        assert got == want.tobytes(), dtype


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("color", ["RGB", "BGR", "L"])
@pytest.mark.parametrize(
    ("dtype", "scale", "zp"),
    [("float32", 0.0, 0), ("int8", 0.02, -4), ("uint8", 0.0, 0), ("float16", 0.0, 0), ("int16", 0.01, 3),
     ("float64", 0.0, 0)],
)  # fmt: skip
@pytest.mark.parametrize("uniform", [True, False])  # one mean/std for every channel, or one each
def test_images_as_numpy_computes_them(
    layout: str, color: str, dtype: str, scale: float, zp: int, uniform: bool
) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGB")
    channels = 1 if color == "L" else 3
    mean = [127.5] * channels if uniform else [0.485 * 255, 0.456 * 255, 0.406 * 255][:channels]
    std = [127.5] * channels if uniform else [0.229 * 255, 0.224 * 255, 0.225 * 255][:channels]
    spec = {
        "color": color,
        "resize": "stretch",
        "interpolation": "bilinear",
        "mean": mean,
        "std": std,
        "layout": layout,
        "pad_value": 0.0,
    }
    shape = [1, 9, 11, channels] if layout == "NHWC" else [1, channels, 9, 11]
    tensor = spec_tensor(dtype, scale, zp, shape)
    got = to_tensor(img, spec, tensor)  # type: ignore[arg-type]
    source = np.asarray(img.convert("L"))[:, :, None] if color == "L" else pixels
    if color == "BGR":
        source = source[:, :, ::-1]
    want = numpy_tensor(source, mean, std, tensor)
    if layout == "NCHW":
        want = want.transpose(2, 0, 1)
    assert got.shape == tuple(shape)
    assert got.dtype == dtype
    assert got.data == np.ascontiguousarray(want[None]).tobytes()
