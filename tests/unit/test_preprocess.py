"""Preprocessing numerics against a straightforward per-pixel reference written from the spec."""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgebundle.runtime.preprocess import (
    FILTERS,
    ImageError,
    ImageTooLarge,
    decode,
    decode_cost,
    load,
    max_pixels,
    open_image,
)
from edgebundle.runtime.preprocess import to_tensor as _to_tensor
from edgebundle.runtime.session import constant
from tests.conftest import IMAGES


def to_tensor(img: Image.Image, s: dict[str, Any], t: dict[str, Any]) -> np.ndarray[Any, Any]:
    """The runtime's tensor as a NumPy array, to check it against references."""
    value = _to_tensor(img, s, t)  # type: ignore[arg-type]
    assert value.dtype == t["dtype"]
    assert list(value.shape) == t["shape"]
    return np.frombuffer(value.data, dtype=value.dtype).reshape(value.shape)


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


@pytest.mark.parametrize(("value", "want"), [(1.4, 1), (2.5, 2), (3.5, 4), (300.0, 255), (-5.0, 0)])
def test_a_constant_without_scale_just_rounds(value: float, want: int) -> None:
    out = constant(value, tensor([2, 2], "uint8"))  # type: ignore[arg-type]
    assert (out.dtype, out.shape, list(out.data)) == ("uint8", (2, 2), [want] * 4)


def test_a_constant_is_float32_first() -> None:
    out = constant(0.1, tensor([3], "float16"))  # type: ignore[arg-type]
    assert out.data == np.full(3, 0.1, dtype=np.float32).astype(np.float16).tobytes()
    q = constant(0.1, tensor([1], "int8", scale=0.1 / 3, zp=2))  # type: ignore[arg-type]
    want = np.round(np.float32(0.1) / np.float32(0.1 / 3)) + 2
    assert q.data == np.array([want], dtype=np.int8).tobytes()


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


def png_bytes(img: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def raw_png(width: int, height: int, depth: int, color_type: int, rows: np.ndarray[Any, Any]) -> bytes:
    """A PNG written by hand (Pillow writes no 16-bit colour PNGs): ``rows`` big-endian samples."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + rows[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def identity(img: Image.Image, color: str) -> np.ndarray[Any, Any]:
    """The tensor of an image at its own size (no resampling): its 8-bit pixel values."""
    w, h = img.size
    return to_tensor(img, spec(color=color), tensor([1, h, w, 1 if color == "L" else 3]))[0]


@pytest.mark.parametrize("color", ["L", "RGB"])
def test_gray16_fixture_gives_the_tensor_of_its_8_bit_version(color: str) -> None:
    # gray16.png holds v * 257 for v = 0..255 (how 8-bit values widen to 16 bits); Pillow's convert
    # clipped them (all but the first pixel came out 255). Scaled by >> 8 they are v again, exactly.
    img16 = decode(str(IMAGES / "gray16.png"))
    assert img16.mode == "I;16"
    img8 = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    np.testing.assert_array_equal(identity(img16, color), identity(img8, color))
    s = spec(color=color)
    shape = tensor([1, 10, 12, 1 if color == "L" else 3])
    np.testing.assert_array_equal(to_tensor(img16, s, shape), to_tensor(img8, s, shape))


def test_16_bit_values_keep_their_high_byte_in_every_16_bit_mode() -> None:
    values = np.array([[0, 255, 256, 257, 1000, 32767, 32768, 65280, 65534, 65535]], dtype=">u2")
    want = (values.astype(np.int64) >> 8).astype(np.float32)[:, :, None]
    png16 = decode(raw_png(10, 1, 16, 0, values))
    np.testing.assert_array_equal(identity(png16, "L"), want)
    for mode, dtype in (("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")):
        img = Image.frombytes(mode, (10, 1), values.astype(dtype).tobytes())
        np.testing.assert_array_equal(identity(img, "L"), want, err_msg=mode)


def test_16_bit_gray_and_16_bit_rgb_agree() -> None:
    # Pillow opens 48/64-bit PNGs as 8-bit RGB(A) keeping each sample's high byte (not rounding):
    # 16-bit gray is scaled the same way, so the same picture gives the same tensor either way.
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 65536, (6, 7), dtype=np.uint16).astype(">u2")
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((6, 7, 1), 65535)], axis=2).astype(">u2")
    img_gray = decode(raw_png(7, 6, 16, 0, gray))
    img_rgb = decode(raw_png(7, 6, 16, 2, rgb))
    img_rgba = decode(raw_png(7, 6, 16, 6, rgba))
    assert (img_rgb.mode, img_rgba.mode) == ("RGB", "RGBA")
    high = (gray.astype(np.int64) >> 8).astype(np.float32)
    for color in ("L", "RGB"):
        want = identity(img_gray, color)
        np.testing.assert_array_equal(want[:, :, 0], high)
        np.testing.assert_array_equal(identity(img_rgb, color), want)
        np.testing.assert_array_equal(identity(img_rgba, color), want)


def test_32_bit_integer_and_float_images_are_scaled_not_clipped() -> None:
    ints = Image.fromarray(np.array([[-5, 0, 255, 256, 32768, 65535, 70000]], dtype=np.int32))
    assert ints.mode == "I"  # 16-bit data in older Pillow plugins: read as 0..65535
    assert identity(ints, "L")[0, :, 0].tolist() == [0, 0, 0, 1, 128, 255, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, 1 / 255, 2.0, -1.0, np.nan]], dtype=np.float32))
    assert floats.mode == "F"  # float images are 0..1
    assert identity(floats, "L")[0, :, 0].tolist() == [0, 128, 255, 1, 255, 0, 0]


def test_transparent_pixels_are_white_whatever_colour_they_store() -> None:
    # Fully transparent pixels hold whatever the encoder left there; they show as the background.
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    a[..., :3] = (10, 200, 30)
    a[0, 0, 3] = 255  # one opaque pixel
    a[1, 2, 3] = 128  # one half transparent one: blended with white
    b = a.copy()
    b[..., :3] = (90, 0, 250)
    b[0, 0, :3] = (10, 200, 30)
    b[1, 2, :3] = (10, 200, 30)
    for color in ("RGB", "L"):
        got_a = identity(decode(png_bytes(Image.fromarray(a))), color)
        got_b = identity(decode(png_bytes(Image.fromarray(b))), color)
        np.testing.assert_array_equal(got_a, got_b)
    got = identity(decode(png_bytes(Image.fromarray(a))), "RGB")
    assert got[0, 0].tolist() == [10, 200, 30]
    assert got[0, 1].tolist() == [255, 255, 255]
    np.testing.assert_allclose(got[1, 2], [(10 + 255) / 2, (200 + 255) / 2, (30 + 255) / 2], atol=1)


def test_gray_alpha_palette_and_colour_key_transparency_without_warnings() -> None:
    pal = Image.new("P", (3, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50])
    pal.putdata([0, 1, 0])
    la = np.array([[[40, 0], [40, 255], [40, 0]]], dtype=np.uint8)
    cases = {
        "LA": png_bytes(Image.fromarray(la)),
        "P, tRNS index": png_bytes(pal, transparency=0),
        "P, tRNS bytes": png_bytes(pal, transparency=bytes([0, 255])),
        "L, tRNS colour": png_bytes(Image.fromarray(np.array([[7, 40, 7]], dtype=np.uint8)), transparency=7),
        "RGB, tRNS colour": png_bytes(
            Image.fromarray(np.array([[[1, 2, 3], [40, 40, 40], [1, 2, 3]]], dtype=np.uint8)),
            transparency=(1, 2, 3),
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns about palette + tRNS bytes when converting to RGB
        for name, data in cases.items():
            got = identity(decode(data), "RGB")
            assert got[0, 0].tolist() == got[0, 2].tolist() == [255, 255, 255], name
            assert got[0, 1].tolist() != [255, 255, 255], name
        pa = Image.new("PA", (2, 1))
        pa.putpalette([10, 20, 30])
        assert identity(pa, "RGB").tolist() == [[[255, 255, 255], [255, 255, 255]]]


def test_an_unconvertible_mode_is_a_bad_image_not_a_crash() -> None:
    with pytest.raises(ImageError, match="LAB"):  # Pillow converts LAB to RGB, not to L
        to_tensor(Image.new("LAB", (4, 4)), spec(color="L"), tensor([1, 4, 4, 1]))


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center-crop"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_gray_images_for_rgb_models_resize_before_widening_with_the_same_result(
    resize: str, interpolation: str
) -> None:
    gray = card().convert("L")
    s = spec(resize=resize, interpolation=interpolation, pad_value=9)
    got = to_tensor(gray, s, tensor([1, 12, 16, 3]))
    np.testing.assert_array_equal(got[0], np.array(reference(gray, s, 12, 16, 3), dtype=np.float32))


def jpeg_bytes(img: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center-crop"])
def test_large_jpegs_decode_at_a_reduced_scale_close_to_the_full_decode(resize: str) -> None:
    yy, xx = np.mgrid[0:800, 0:1200]
    smooth = np.stack([xx * 255 // 1200, yy * 255 // 800, (xx + yy) * 255 // 2000], axis=2).astype(np.uint8)
    data = jpeg_bytes(Image.fromarray(smooth))
    s, t = spec(resize=resize), tensor([1, 24, 32, 3])
    img = open_image(data, None, s, t)
    assert img.size == (150, 100)  # 1/8: still at least what the resize needs
    assert decode_cost(img) == 150 * 100 * 5  # RGB: 4 bytes a pixel, and L for a gray model
    full = to_tensor(decode(data), s, t)
    np.testing.assert_allclose(to_tensor(load(img), s, t), full, atol=6)
    # Only as far as the resize allows: 1/4 for a model twice as large
    assert open_image(data, None, s, tensor([1, 160, 200, 3])).size == (300, 200)
    assert open_image(data, None, s, tensor([1, 800, 1200, 3])).size == (1200, 800)


def test_jpeg_draft_accounts_for_exif_rotation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 1200x400, shown 400x1200
    data = jpeg_bytes(Image.new("RGB", (1200, 400), (200, 10, 10)), exif=exif)
    s, t = spec(resize="stretch"), tensor([1, 300, 50, 3])
    img = open_image(data, None, s, t)
    assert img.size == (300, 100)  # 1/4: shown as 100x300, still >= 50x300
    assert load(img).size == (100, 300)
    assert to_tensor(img, s, t).shape == (1, 300, 50, 3)


def test_the_pixel_limit_is_checked_from_the_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.loadtest import gray_png

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # max_pixels() turns it off
    bomb = gray_png(12000, 12000, pixels=False)  # declares 144 MP, holds 64 bytes
    with pytest.raises(ImageTooLarge, match=r"12000x12000 is 144.0 megapixels, over the limit of 40 "):
        open_image(bomb, max_pixels(40))
    assert open_image(bomb, max_pixels(150)).size == (12000, 12000)  # Pillow's own 179 MP cap is off


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


def test_a_codec_the_binarys_pillow_lacks_is_named_with_what_it_decodes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The default targets' Pillow has no libtiff (edgebundle/pins.toml): a deflate-compressed TIFF is
    refused in one line that says which formats the binary reads (Pillow's own message first)."""
    path = tmp_path / "deflate.tif"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, compression="tiff_adobe_deflate")
    monkeypatch.delattr(Image.core, "libtiff_decoder")  # as in a Pillow built without libtiff
    with pytest.raises(ImageError) as info:
        decode(str(path))
    assert str(info.value) == (
        "decoder libtiff not available: this binary decodes JPEG, PNG, BMP, GIF, PPM and uncompressed TIFF "
        "(the -tflite targets' binaries decode more)"
    )


def test_decompression_bomb_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 0  # every image now counts as a bomb; the real limit is 2 * 89 M pixels
    try:
        with pytest.raises(ImageError, match="image too large"):
            decode(buf.getvalue())
    finally:
        Image.MAX_IMAGE_PIXELS = old
