"""Image -> input tensor, exactly as the recipe says:

decode with Pillow (EXIF orientation applied; a JPEG larger than twice what the resize needs at 1/2,
1/4 or 1/8 scale), scale high bit depths to 8 bits and composite transparency over white
(``to_8bit``), convert to the recipe's color, resize to the model's
height x width with the recipe's filter and mode, float32, (x - mean) / std, quantize with the model's
own scale/zero point when the input is an integer tensor (round half to even, clip), lay out as the
model wants (NHWC/NCHW) and add the batch dimension.
"""

from __future__ import annotations

import importlib
import io
import struct
import sys
from typing import TYPE_CHECKING, Any

from PIL import Image

from .geometry import image_geometry, placement
from .pixels import tensor_bytes
from .tensors import Tensor

if TYPE_CHECKING:
    from .manifest import TensorSpec

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


# img.info key of a JPEG that open_image lets decode at a fraction of its size: its full size as a
# viewer shows it (EXIF orientation applied), what detections are reported in.
FULL_SIZE = "edgebundle_full_size"


class ImageError(Exception):
    """The input is missing, not an image, or corrupt."""


class ImageTooLarge(ImageError):
    """The image header declares more pixels than allowed (a decompression bomb, or just too big)."""


def max_pixels(max_megapixels: float) -> int:
    """The pixel limit for ``--max-megapixels``, checked by ``open_image`` in every mode.

    Pillow's own check is turned off (process-wide) in its favour: it would fire first, inside
    ``Image.open``, as a warning printed on stderr above 89 MP and an error above 179 MP, whatever
    the option says."""
    Image.MAX_IMAGE_PIXELS = None
    return max(1, int(max_megapixels * 1_000_000))


def open_image(
    data: bytes | str,
    limit: int | None = None,
    spec: dict[str, Any] | None = None,
    tensor: TensorSpec | None = None,
) -> Image.Image:
    """Read an image's header (path or bytes), nothing more: refuse it when it has more than
    ``limit`` pixels; with the recipe's ``spec`` and the input ``tensor``, let a JPEG decode at
    1/2, 1/4 or 1/8 scale as long as it stays at least as large as the resize needs (libjpeg's DCT
    scaling, ``Image.draft``): a 40 MP photo for a 224x224 model then costs 0.6 MP of memory."""
    try:
        _load_plugin(data)
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image too large: {exc}") from None
    except _PIL_ERRORS as exc:
        raise _image_error(exc) from None
    width, height = img.size
    if limit is not None and width * height > limit:
        img.close()
        raise ImageTooLarge(
            f"image too large: {width}x{height} is {width * height / 1e6:.1f} megapixels, "
            f"over the limit of {limit / 1e6:g} (--max-megapixels)"
        )
    if spec is not None and tensor is not None and img.format == "JPEG":
        geo = image_geometry(tensor["shape"], spec.get("layout"))
        # EXIF orientation is applied after decoding: 90-degree turns swap what the resize needs.
        turned = img.getexif().get(0x0112) in (5, 6, 7, 8)
        img.info[FULL_SIZE] = (height, width) if turned else (width, height)
        need = _resized_size((height, width) if turned else (width, height), geo.width, geo.height, spec)
        img.draft(None, (need[1], need[0]) if turned else need)
    return img


# Pillow's Image.open first imports the plugins of five formats (BMP, GIF, JPEG, PPM, PNG: ~10 ms of a
# start, more than the rest of a small model's pipeline) and, when none of them accepts the file, all
# ~40. The first bytes of a file name its format: import that one plugin only and tell Pillow the five
# are loaded. When it does not accept the file (or the bytes name no format here), Pillow imports all
# of them itself and tries the rest, exactly as before: what opens, and every error, is unchanged.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PngImagePlugin"),
    (b"\xff\xd8\xff", "JpegImagePlugin"),
    (b"GIF8", "GifImagePlugin"),
    (b"BM", "BmpImagePlugin"),
    (b"II*\x00", "TiffImagePlugin"),
    (b"MM\x00*", "TiffImagePlugin"),
    (b"RIFF", "WebPImagePlugin"),
    (b"P", "PpmImagePlugin"),
)


def plugin_for(head: bytes) -> str | None:
    """The Pillow plugin (module name) for a file that starts with ``head``, if one is known here."""
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def _load_plugin(data: bytes | str) -> None:
    if Image._initialized >= 2:  # Pillow's init ran: every plugin is there
        return
    try:
        if isinstance(data, bytes):
            head = data[:16]
        else:
            with open(data, "rb") as f:
                head = f.read(16)
        name = plugin_for(head)
        if name is not None:
            importlib.import_module(f"PIL.{name}")
    except (OSError, ImportError):
        return  # Image.open says what is wrong with the file; a missing plugin: Pillow's fallback
    finally:
        Image._initialized = max(Image._initialized, 1)


# Bytes per pixel an opened image takes at the peak of decoding it and making it 8-bit L or RGB:
# what Pillow stores per pixel (1 for 1-bit, gray and palette images, 2 for 16-bit, 4 for the rest,
# RGB included) for the decoded image plus the copies to_tensor makes before it resizes (a palette
# image with transparency: RGBA, then RGB over white; 16-bit: its bytes, then L; RGB for an L model).
_PEAK_BYTES_PER_PIXEL = {"1": 2, "L": 1, "P": 9, "LA": 5, "PA": 9, "RGB": 5, "RGBA": 9, "I": 5, "F": 9}


def decode_cost(img: Image.Image) -> int:
    """The memory an opened image will take at the peak of decoding and converting it (bytes)."""
    width, height = img.size
    mode = img.mode
    per_pixel = 5 if mode.startswith("I;16") else _PEAK_BYTES_PER_PIXEL.get(mode, 9)
    return width * height * per_pixel


def load(img: Image.Image) -> Image.Image:
    """Decode an opened image, with its EXIF orientation applied (in place: no second copy)."""
    try:
        with img:  # closes the file (a multi-frame image keeps it open), keeps the pixels
            img.load()
            # ImageOps (and its imports) only for an image that needs turning: exif_transpose
            # does nothing else in place.
            if img.getexif().get(0x0112, 1) in _TURNS:
                from PIL import ImageOps

                ImageOps.exif_transpose(img, in_place=True)
        return img
    except _PIL_ERRORS as exc:
        raise _image_error(exc) from None


_TURNS = range(2, 9)  # EXIF orientations that move pixels (1: as stored)


def decode(data: bytes | str, limit: int | None = None) -> Image.Image:
    """Open and fully decode an image from a path or bytes, with EXIF orientation applied."""
    return load(open_image(data, limit))


# Pillow raises UnidentifiedImageError (an OSError) for non-images and OSError/SyntaxError (from some
# plugins EOFError or struct.error) for truncated or broken files.
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


def _image_error(exc: Exception) -> ImageError:
    if isinstance(exc, FileNotFoundError):
        return ImageError("no such file")
    if isinstance(exc, IsADirectoryError):
        return ImageError("is a directory")
    return ImageError(_pil_message(exc))


def _pil_message(exc: BaseException) -> str:
    # Pillow appends the file name or a "<_io.BytesIO object at 0x...>" repr: callers name the input.
    if "cannot identify image file" in str(exc):
        return "cannot identify image file (not an image, or a format this binary does not read)"
    if str(exc).startswith("decoder ") and str(exc).endswith(" not available"):
        # The leanest binaries' Pillow has JPEG and zlib only (edgebundle/pins.toml): not TIFF's
        # compressions by libtiff, nor JPEG 2000.
        return f"{exc}: this binary decodes {DECODES} (the -tflite targets' binaries decode more)"
    return str(exc) or type(exc).__name__


DECODES = "JPEG, PNG, BMP, GIF, PPM and uncompressed TIFF"


def to_tensor(img: Image.Image, spec: dict[str, Any], tensor: TensorSpec) -> Tensor:
    """Turn a decoded image into the value for one input tensor (see the module docstring)."""
    geo = image_geometry(tensor["shape"], spec.get("layout"))
    color = spec["color"]
    want = "L" if color == "L" else "RGB"
    try:
        img = to_8bit(img)
        if img.mode == "L" and want == "RGB":
            # Gray to RGB copies the one channel three times, which commutes with resizing (the same
            # filter on equal channels): resize the small gray image first, convert the result.
            img = _resize(img, geo.width, geo.height, spec).convert(want)
        else:
            img = _resize(img if img.mode == want else img.convert(want), geo.width, geo.height, spec)
    except ValueError as exc:  # a mode Pillow cannot convert (e.g. LAB from a TIFF)
        raise ImageError(f"cannot convert a {img.mode} image to {want}: {exc}") from None
    if geo.channels != len(img.mode):  # the builder refuses such recipes; never feed garbage
        raise ValueError(f"model wants {geo.channels} channels, recipe gives {len(img.mode)}")
    planar = geo.layout in ("NCHW", "CHW")
    data = tensor_bytes(img, color == "BGR", spec["mean"], spec["std"], tensor, planar)
    return Tensor(tensor["dtype"], tuple(tensor["shape"]), data)


# Transparent pixels are composited over white: what an image viewer or a browser page shows, so what
# a person labelling the image saw. Dropping the alpha instead (Pillow's convert) would feed the model
# colours nobody sees, which encoders and optimisers (pngquant, oxipng) set as they please: two files
# that look the same would give different results.
BACKGROUND = 255
_ALPHA_MODES = {"RGBA": "RGB", "LA": "L", "PA": "RGB", "RGBa": "RGB", "La": "L"}


def to_8bit(img: Image.Image) -> Image.Image:
    """An 8-bit image without transparency, ready for the recipe's colour conversion.

    High bit depths are scaled, not clipped (Pillow's convert clips: a 16-bit image becomes almost
    all white): 16-bit values v become v >> 8, i.e. their high byte, which is what Pillow itself does
    to 16-bit RGB(A) PNGs (it opens them as 8-bit RGB(A) keeping the high bytes), so 16-bit gray and
    16-bit colour agree, and an 8-bit image stored as 16 bits (v * 257) gives back exactly v. Mode I
    (32-bit integers: 16-bit data from older Pillow plugins, PGM/TIFF) is read as 16-bit, clipped to
    0..65535; mode F (floating point: TIFF, PFM) as 0..1, the convention of float images."""
    mode = img.mode
    if mode.startswith("I;16"):
        # Pillow's unpackers read each 16-bit value's high byte straight into an 8-bit image.
        big = mode == "I;16B" or (mode == "I;16N" and sys.byteorder == "big")
        raw = "L;16B" if big else "L;16"
        img = Image.frombytes("L", img.size, img.tobytes(), "raw", raw)
    elif mode == "I":
        img = img.point(_high_byte_lut(), "L")
    elif mode == "F":
        img = img.point(lambda v: v * 255 + 0.5).convert("L")  # F -> L truncates and clips
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow's own palette + tRNS -> alpha
    elif img.mode in ("L", "RGB") and "transparency" in img.info:
        img = img.convert(img.mode + "A")  # a tRNS colour key
    if img.mode in _ALPHA_MODES:
        if img.mode in ("PA", "RGBa", "La"):
            img = img.convert("LA" if img.mode == "La" else "RGBA")
        flat = Image.new(
            _ALPHA_MODES[img.mode], img.size, BACKGROUND if img.mode == "LA" else (BACKGROUND,) * 3
        )
        flat.paste(img, mask=img)  # an RGBA/LA mask pastes through its alpha band
        img = flat
    return img


_LUT: list[int] = []


def _high_byte_lut() -> list[int]:
    if not _LUT:
        _LUT.extend(v >> 8 for v in range(65536))
    return _LUT


def _resized_size(size: tuple[int, int], width: int, height: int, spec: dict[str, Any]) -> tuple[int, int]:
    """The size ``_resize`` scales an image of ``size`` to before padding or cropping."""
    place = placement(size[0], size[1], width, height, spec["resize"])
    return place.width, place.height


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
