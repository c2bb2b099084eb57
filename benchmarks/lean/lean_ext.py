"""The NumPy-free program: Pillow + _ebcore (LiteRT's C API; preprocessing in C).

    python lean_ext.py [--sp DIR[,DIR]] [--png-only] MODEL IMAGE MODE MEAN STD K [--dump]

--png-only: import only Pillow's PNG plugin (Image.open otherwise imports BMP, GIF, JPEG, PPM and
PNG's first). Same output as ref.py.
"""
# ruff: noqa: E402 (sys.path is set from the command line before the imports)

import sys

if sys.argv[1] == "--sp":
    sys.path[:0] = sys.argv[2].split(",")
    del sys.argv[1:3]
png_only = sys.argv[1] == "--png-only"
if png_only:
    del sys.argv[1]

import json

from PIL import Image

if png_only:
    from PIL import PngImagePlugin  # noqa: F401

    Image._initialized = 1  # preinit() done: the plugins imported are the ones we asked for

import _ebcore

model, image, mode, mean, std, k = sys.argv[1:7]
with open(model, "rb") as f:
    m = _ebcore.Model(f.read())
_, dims, _, _ = m.input
img = Image.open(image).convert(mode).resize((dims[2], dims[1]), Image.BILINEAR)
outs = m.run(img.tobytes(), [float(v) for v in mean.split(",")], [float(v) for v in std.split(",")])
outs = [memoryview(o).cast("f") for o in outs]
if sys.argv[7:] == ["--dump"]:
    print(json.dumps([o.tolist() for o in outs]))
else:
    y = outs[0]
    top = sorted(range(len(y)), key=y.__getitem__, reverse=True)[: int(k)]
    print(json.dumps([[i, y[i]] for i in top]))
