"""``APP --annotate OUT.png IMAGE``: the detections drawn on the image (upright: its EXIF orientation
applied, as the boxes are reported), for people who would rather look than read. Imported only when
asked for: ImageDraw stays out of every other start.

Pillow's built-in bitmap font, not FreeType: the binary carries no font library (the PyInstaller
build excludes ``PIL._imagingft``), and the picture looks the same on every machine.
"""

from __future__ import annotations

from typing import IO, Any

from PIL import Image, ImageDraw, ImageFont

from .preprocess import decode

# One colour per class (index modulo the palette): Tableau 10, readable on photos.
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def line_width(size: tuple[int, int]) -> int:
    """Box outlines: 2 pixels, thicker on large images (1 per 250 pixels of the shorter side)."""
    return max(2, min(size) // 250)


def annotate(path: str, detections: list[dict[str, Any]], limit: int | None = None) -> Image.Image:
    """The image at ``path`` with ``detections`` (the binary's answer) drawn on it: each box's outline
    inside its edges, its label (or class index) and score above it, its keypoints as dots."""
    img = decode(path, limit).convert("RGB")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default_imagefont()
    width = line_width(img.size)
    right, bottom = img.width - 1, img.height - 1
    # the best last, so that it is drawn over the others
    for det in reversed(detections):
        rgb = color(int(det["index"]))
        x0, y0, x1, y1 = (round(v) for v in det["box"])
        x0, x1 = min(max(x0, 0), right), min(max(x1, 0), right)
        y0, y1 = min(max(y0, 0), bottom), min(max(y1, 0), bottom)
        if x1 < x0 or y1 < y0:
            continue
        draw.rectangle((x0, y0, x1, y1), outline=rgb, width=width)
        for x, y in det.get("keypoints", ()):
            r = width + 1
            draw.ellipse((x - r, y - r, x + r, y + r), fill=rgb, outline=(255, 255, 255))
        text = f"{det.get('label') or det['index']} {det['score']:.2f}"
        left, top, text_right, text_bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = text_right - left + 4, text_bottom - top + 4
        # above the box, or inside its top when there is no room above
        ty = y0 - th if y0 - th >= 0 else y0 + width
        tx = min(x0, max(0, img.width - tw))
        draw.rectangle((tx, ty, tx + tw - 1, ty + th - 1), fill=rgb)
        draw.text((tx + 2 - left, ty + 2 - top), text, fill=(255, 255, 255), font=font)
    return img


# Image.registered_extensions() would import every plugin: the few formats worth writing.
FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF"}


def save(img: Image.Image, f: IO[bytes], name: str) -> None:
    """``img`` in the format ``name``'s extension says (PNG when Pillow does not know it)."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    img.save(f, format=FORMATS.get(ext, "PNG"))
