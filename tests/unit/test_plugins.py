"""The runtime imports only the Pillow plugin a file's first bytes name, and still opens (or refuses)
every file exactly as Pillow does with all its plugins: checked in fresh interpreters, since a test
process that ever called Image.init has every plugin already."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from edgebundle.runtime.preprocess import plugin_for

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: open every file with the runtime (lazy plugins), record what happened and
# which plugins got imported; then the same with all of Pillow's plugins loaded first.
PROBE = """
import json, sys
from PIL import Image
from edgebundle.runtime.preprocess import ImageError, decode
out = []
for path in sys.argv[1:]:
    try:
        img = decode(path)
        out.append(["ok", img.mode, list(img.size), img.tobytes().hex()[:4000]])
    except ImageError as exc:
        out.append(["error", str(exc)])
plugins = sorted(m for m in sys.modules if m.startswith("PIL.") and m.endswith("ImagePlugin"))
print(json.dumps({"results": out, "plugins": plugins}))
"""

EAGER = PROBE.replace("from PIL import Image\n", "from PIL import Image\nImage.init()\n", 1)


def probe(code: str, files: list[Path]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, files)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def image_bytes(fmt: str, mode: str = "RGB") -> bytes:
    img = Image.new(mode, (7, 5), (10, 200, 30) if mode == "RGB" else 77)
    img.putpixel((1, 1), (250, 0, 128) if mode == "RGB" else 3)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


FORMATS = [("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB"),
           ("PPM", "RGB"), ("TGA", "RGB"), ("ICO", "RGB")]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    where = tmp_path_factory.mktemp("formats")
    out = []
    for fmt, mode in FORMATS:
        # No extension: Pillow >= 12 picks a plugin by the file's extension, the runtime by its bytes.
        path = where / f"image-{fmt.lower()}"
        path.write_bytes(image_bytes(fmt, mode))
        out.append(path)
    png = image_bytes("PNG")
    (where / "truncated-png").write_bytes(png[:40])
    (where / "not-an-image").write_bytes(b"hello, world\n" * 10)
    (where / "png-named.jpg").write_bytes(png)
    (where / "empty").write_bytes(b"")
    out += [where / n for n in ("truncated-png", "not-an-image", "png-named.jpg", "empty")]
    out.append(where / "missing.png")
    out.append(where)  # a directory
    return out


def test_lazy_plugins_open_and_refuse_like_all_plugins(files: list[Path]) -> None:
    lazy = probe(PROBE, files)
    eager = probe(EAGER, files)
    assert lazy["results"] == eager["results"]
    results = lazy["results"]
    assert isinstance(results, list)
    assert [r[0] for r in results] == ["ok"] * len(FORMATS) + [
        "error",
        "error",
        "ok",
        "error",
        "error",
        "error",
    ]
    assert "no such file" in results[-2][1]
    assert "is a directory" in results[-1][1]


def test_a_png_imports_only_the_png_plugin(files: list[Path]) -> None:
    png = next(p for p in files if p.name == "image-png")
    assert probe(PROBE, [png])["plugins"] == ["PIL.PngImagePlugin"]
    jpeg = next(p for p in files if p.name == "image-jpeg")
    assert probe(PROBE, [jpeg])["plugins"] == ["PIL.JpegImagePlugin"]


def test_unknown_first_bytes_fall_back_to_every_plugin(files: list[Path]) -> None:
    tga = next(p for p in files if p.name == "image-tga")
    found = probe(PROBE, [tga])
    assert found["results"][0][0] == "ok"  # type: ignore[index]
    assert len(found["plugins"]) > 20  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("head", "plugin"),
    [
        (b"\x89PNG\r\n\x1a\n\0\0", "PngImagePlugin"),
        (b"\xff\xd8\xff\xe0", "JpegImagePlugin"),
        (b"GIF89a", "GifImagePlugin"),
        (b"BM6\0", "BmpImagePlugin"),
        (b"II*\x00", "TiffImagePlugin"),
        (b"MM\x00*", "TiffImagePlugin"),
        (b"RIFF\0\0\0\0WEBP", "WebPImagePlugin"),
        (b"P6\n", "PpmImagePlugin"),
        (b"\0\0\1\0", None),
        (b"", None),
    ],
)
def test_plugin_for(head: bytes, plugin: str | None) -> None:
    assert plugin_for(head) == plugin
