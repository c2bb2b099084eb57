"""The plain script a user writes by hand: NumPy, Pillow and the TFLite interpreter package.

    python ref.py [--sp DIR[,DIR]] MODEL IMAGE MODE MEAN STD K [--dump]

MODE: L or RGB; MEAN, STD: comma-separated per channel. Prints the top K of the first output as JSON
([[index, score], ...]), or with --dump every output (dequantised) as JSON lists.
"""

import sys

if sys.argv[1] == "--sp":
    sys.path[:0] = sys.argv[2].split(",")
    del sys.argv[1:3]

import json

import numpy as np
from PIL import Image

try:
    from tflite_runtime.interpreter import Interpreter
except ImportError:
    from ai_edge_litert.interpreter import Interpreter

model, image, mode, mean, std, k = sys.argv[1:7]
interp = Interpreter(model_path=model)
interp.allocate_tensors()
inp = interp.get_input_details()[0]
_, h, w, _ = inp["shape"]
img = Image.open(image).convert(mode).resize((int(w), int(h)), Image.BILINEAR)
mean = np.array([float(v) for v in mean.split(",")], np.float32)
std = np.array([float(v) for v in std.split(",")], np.float32)
x = ((np.asarray(img, np.float32).reshape(inp["shape"][1:]) - mean) / std)[None]
if inp["dtype"] != np.float32:
    scale, zero = inp["quantization"]
    info = np.iinfo(inp["dtype"])
    x = np.clip(np.round(x / scale) + zero, info.min, info.max)
interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
interp.invoke()
outs = []
for d in interp.get_output_details():
    y = interp.get_tensor(d["index"]).reshape(-1).astype(np.float32)
    if d["quantization"][0]:
        y = (y - d["quantization"][1]) * d["quantization"][0]
    outs.append(y)
if sys.argv[7:] == ["--dump"]:
    print(json.dumps([y.tolist() for y in outs]))
else:
    top = np.argsort(-outs[0], kind="stable")[: int(k)]
    print(json.dumps([[int(i), float(outs[0][i])] for i in top]))
