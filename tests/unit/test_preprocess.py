"""Preprocessing numerics against a straightforward per-pixel reference written from the spec."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgebundle.runtime.preprocess import FILTERS, ImageError, decode, quantize, to_tensor
from tests.conftest import IMAGES


def spec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "color": "RGB",
        "resize": "stretch",
        "interpolation": "bilinear",
        "mean": [0.0],
        "std": [1.0],
        "layout": None,
        "pad_value": 0.0,
    }
    base.update(kw)
    return base


def tensor(shape: list[int], dtype: str = "float32", scale: float = 0.0, zp: int = 0) -> dict[str, Any]:
    return {"name": "in", "index": 0, "shape": shape, "dtype": dtype, "scale": scale, "zero_point": zp}


def card(w: int = 23, h: int = 17) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def reference(img: Image.Image, s: dict[str, Any], h: int, w: int, c: int) -> list[list[list[float]]]:
    """Per pixel, per channel, in plain Python: HWC nested lists of real values."""
    img = img.convert("L" if s["color"] == "L" else "RGB")
    resample = FILTERS[s["interpolation"]]
    iw, ih = img.size
    if s["resize"] == "stretch":
        img = img.resize((w, h), resample)
    elif s["resize"] == "letterbox":
        k = min(w / iw, h / ih)
        nw, nh = max(1, round(iw * k)), max(1, round(ih * k))
        small = img.resize((nw, nh), resample)
        pad = round(s["pad_value"])
        out = Image.new(img.mode, (w, h), pad if img.mode == "L" else (pad, pad, pad))
        out.paste(small, ((w - nw) // 2, (h - nh) // 2))
        img = out
    else:
        k = max(w / iw, h / ih)
        nw, nh = max(w, math.ceil(iw * k - 1e-6)), max(h, math.ceil(ih * k - 1e-6))
        big = img.resize((nw, nh), resample)
        x0, y0 = (nw - w) // 2, (nh - h) // 2
        img = big.crop((x0, y0, x0 + w, y0 + h))
    rows = []
    for y in range(h):
        row = []
        for x in range(w):
            px = img.getpixel((x, y))
            values = [float(px)] if isinstance(px, int) else [float(v) for v in px]
            if s["color"] == "BGR":
                values = values[::-1]
            mean = s["mean"] * c if len(s["mean"]) == 1 else s["mean"]
            std = s["std"] * c if len(s["std"]) == 1 else s["std"]
            row.append([(values[i] - mean[i]) / std[i] for i in range(c)])
        rows.append(row)
    return rows


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center-crop"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_float_nhwc_matches_reference(resize: str, interpolation: str) -> None:
    s = spec(
        resize=resize,
        interpolation=interpolation,
        mean=[127.5, 120.0, 100.0],
        std=[127.5, 60.0, 30.0],
        pad_value=114,
    )
    got = to_tensor(card(), s, tensor([1, 12, 16, 3]))
    assert got.shape == (1, 12, 16, 3)
    assert got.dtype == np.float32
    want = np.array(reference(card(), s, 12, 16, 3), dtype=np.float64)
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-5)


def test_letterbox_pads_the_short_side() -> None:
    s = spec(resize="letterbox", pad_value=7)
    got = to_tensor(Image.new("RGB", (40, 10), (200, 100, 50)), s, tensor([1, 20, 20, 3]))
    # 40x10 scaled to 20x5, centred vertically: rows 0..6 and 13..19 are padding
    assert (got[0, :7] == 7).all()
    assert (got[0, 13:] == 7).all()
    np.testing.assert_allclose(got[0, 10, 10], [200, 100, 50])


def test_bgr_gray_and_nchw() -> None:
    s = spec(color="BGR")
    got = to_tensor(card(), s, tensor([1, 3, 9, 11]))  # channels first, inferred
    want = np.array(reference(card(), s, 9, 11, 3)).transpose(2, 0, 1)
    np.testing.assert_allclose(got[0], want, atol=1e-5)
    g = spec(color="L", std=[255.0])
    got = to_tensor(card(), g, tensor([1, 8, 8, 1]))
    np.testing.assert_allclose(got[0], np.array(reference(card(), g, 8, 8, 1)), atol=1e-6)
    assert to_tensor(card(), g, tensor([8, 8])).shape == (8, 8)
    assert to_tensor(card(), s, tensor([5, 6, 3])).shape == (5, 6, 3)


def test_explicit_layout_overrides_inference() -> None:
    # [1, 3, 5, 3] is ambiguous; inferred as NHWC unless the recipe says NCHW
    assert to_tensor(card(), spec(), tensor([1, 3, 5, 3])).shape == (1, 3, 5, 3)
    got = to_tensor(card(), spec(layout="NCHW"), tensor([1, 3, 5, 3]))
    want = np.array(reference(card(), spec(), 5, 3, 3)).transpose(2, 0, 1)
    np.testing.assert_allclose(got[0], want, atol=1e-5)


@pytest.mark.parametrize(
    ("dtype", "scale", "zp"), [("int8", 0.0078125, -1), ("uint8", 1 / 255, 0), ("int8", 0.5, 3)]
)
def test_quantized_input_rounds_and_clips(dtype: str, scale: float, zp: int) -> None:
    s = spec(mean=[127.5], std=[127.5])
    got = to_tensor(card(), s, tensor([1, 6, 7, 3], dtype, scale, zp))
    assert got.dtype == np.dtype(dtype)
    info = np.iinfo(dtype)
    real = reference(card(), s, 6, 7, 3)
    for y in range(6):
        for x in range(7):
            for ch in range(3):
                q = round(np.float32(real[y][x][ch]) / np.float32(scale)) + zp  # half to even
                assert got[0, y, x, ch] == min(max(q, info.min), info.max)


def test_quantize_without_scale_just_rounds() -> None:
    out = quantize(np.array([1.4, 2.5, 300.0, -5.0], dtype=np.float32), tensor([4], "uint8"))
    assert out.tolist() == [1, 2, 255, 0]


def test_exif_orientation_is_applied() -> None:
    img = decode(str(IMAGES / "exif_rotated.jpg"))
    assert img.size == (20, 40)
    r, _, b = img.getpixel((10, 2))
    assert r > 150 > b  # red ends up on top after the rotation


@pytest.mark.parametrize("name", ["rgba.png", "palette.png", "gray16.png", "rgb.jpg"])
def test_unusual_modes_decode_and_convert(name: str) -> None:
    for color, c in (("RGB", 3), ("L", 1)):
        got = to_tensor(decode(str(IMAGES / name)), spec(color=color), tensor([1, 10, 12, c]))
        assert got.shape == (1, 10, 12, c)
        assert np.isfinite(got).all()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("corrupt.png", "image file is truncated"),
        ("not_image.png", "cannot identify image file"),
        ("empty.jpg", "cannot identify image file"),
        ("missing.png", "no such file"),
    ],
)
def test_bad_images_raise_one_line_errors(name: str, message: str) -> None:
    with pytest.raises(ImageError) as info:
        decode(str(IMAGES / name))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_decompression_bomb_is_refused() -> None:
    import io

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 0  # every image now counts as a bomb; the real limit is 2 * 89 M pixels
    try:
        with pytest.raises(ImageError, match="image too large"):
            decode(buf.getvalue())
    finally:
        Image.MAX_IMAGE_PIXELS = old
