"""The hand-written plain script of benchmarks/compare.py: what an experienced user writes to run a
TFLite model on one image, with nothing of edgebundle's runtime in it (no argparse, no manifest, no
model digest, no self-test comparison), generated per model with the recipe's constants baked in.

``script(manifest)`` is ``script.py IMAGE``: open the model with the target's interpreter module,
``Image.open(IMAGE).convert(color).resize((w, h), filter)``, ``(x - mean) / std`` as float32 (or
quantized for an integer input), set_tensor, invoke, get_tensor, and one JSON line: the top 5
``[index, score]`` of a classifier, else every output's name, shape and first values (raw, as the
interpreter returns them). ``script(manifest, bench=True)`` is ``bench.py IMAGE N``: the same
preprocessing, then the inference (set_tensor, invoke, get_tensor of every output) timed N times after
the runtime's warm-up runs, one ``{"event": "inference", "ms": ...}`` line each, as ``--eb-bench``.

``disagreement(answer, binary_answer, binary_outputs)`` says how the script's answer differs from the
binary's for the same image (None: it agrees), so that compare.py measures the same work or nothing.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgebundle.runtime.geometry import image_geometry  # noqa: E402
from edgebundle.runtime.measure import WARMUP_RUNS  # noqa: E402

FILTERS = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC", "lanczos": "LANCZOS"}
TOP = 5  # what the script prints of a classifier
FIRST = 5  # values printed per output of other models


class Unsupported(ValueError):
    """A model or recipe the hand-written script does not cover (one line: why)."""


def is_classifier(manifest: dict[str, Any]) -> bool:
    out = manifest["recipe"]["output"]
    decoder = out.get("decoder")
    return decoder == "classification" or (decoder is None and bool(out.get("top_k")))


def script(manifest: dict[str, Any], bench: bool = False) -> str:
    """The script's text (``bench``: the latency variant); Unsupported for several inputs or an
    image tensor without a batch dimension."""
    spec = manifest["recipe"]["input"]
    inputs, outputs = manifest["model"]["inputs"], manifest["model"]["outputs"]
    if len(inputs) != 1:
        raise Unsupported(f"{len(inputs)} inputs (the hand-written script feeds one image)")
    tensor = inputs[0]
    geo = image_geometry(tensor["shape"], spec.get("layout"))
    if geo.layout not in ("NHWC", "NCHW"):
        raise Unsupported(f"a {geo.layout} input (the hand-written script feeds NHWC or NCHW)")
    module = manifest["interpreter"]["module"]
    lines = ["import json", "import sys"]
    lines += ["import time"] if bench else []
    lines += ["", "import numpy as np", "from PIL import Image"]
    lines += ["from PIL import ImageOps"] if spec["resize"] != "stretch" else []
    lines += [
        f"from {module} import Interpreter",
        "",
        f'interpreter = Interpreter(model_path="{manifest["model"]["file"]}")',
        "interpreter.allocate_tensors()",
        "input_details = interpreter.get_input_details()[0]",
        "output_details = interpreter.get_output_details()",
        "",
        *_preprocess(spec, geo.width, geo.height, geo.layout, tensor["dtype"]),
        'interpreter.set_tensor(input_details["index"], x)',
    ]
    if bench:
        lines += [
            f"for run in range({WARMUP_RUNS} + int(sys.argv[2])):",
            "    start = time.perf_counter()",
            '    interpreter.set_tensor(input_details["index"], x)',
            "    interpreter.invoke()",
            '    values = [interpreter.get_tensor(d["index"]) for d in output_details]',
            "    ms = (time.perf_counter() - start) * 1000",
            f"    if run >= {WARMUP_RUNS}:",
            '        print(json.dumps({"event": "inference", "ms": round(ms, 4)}))',
        ]
    elif is_classifier(manifest):
        lines += ["interpreter.invoke()", "", *_top_k(manifest["recipe"]["output"], outputs)]
    else:
        lines += [
            "interpreter.invoke()",
            "",
            "outputs = []",
            "for detail in output_details:",
            '    value = interpreter.get_tensor(detail["index"])',
            f"    first = value.reshape(-1)[:{FIRST}].tolist()",
            '    outputs.append({"name": detail["name"], "shape": list(value.shape), "first": first})',
            'print(json.dumps({"outputs": outputs}))',
        ]
    return "\n".join(lines) + "\n"


def _number(values: list[float]) -> str:
    """A recipe's mean or std as the script writes it: one float, or a float32 array per channel."""
    if len(set(values)) == 1:
        return repr(float(values[0]))
    return f"np.array({[float(v) for v in values]}, dtype=np.float32)"


def _preprocess(spec: dict[str, Any], width: int, height: int, layout: str, dtype: str) -> list[str]:
    color = spec["color"]
    method = f"Image.{FILTERS[spec['interpolation']]}"
    opened = f'Image.open(sys.argv[1]).convert("{"L" if color == "L" else "RGB"}")'
    if spec["resize"] == "letterbox":
        pad = round(spec.get("pad_value", 0.0))
        fill = pad if color == "L" else (pad, pad, pad)
        lines = [f"image = ImageOps.pad({opened}, ({width}, {height}), {method}, color={fill})"]
    elif spec["resize"] == "center-crop":
        lines = [f"image = ImageOps.fit({opened}, ({width}, {height}), {method})"]
    else:
        lines = [f"image = {opened}.resize(({width}, {height}), {method})"]
    lines.append("x = np.asarray(image, dtype=np.float32)")
    if color == "BGR":
        lines.append("x = x[:, :, ::-1]")
    lines.append(f"x = (x - {_number(spec['mean'])}) / {_number(spec['std'])}")
    if np.dtype(dtype).kind != "f":
        lines += [
            'scale, zero_point = input_details["quantization"]',
            f"x = np.clip(np.round(x / scale) + zero_point, {np.iinfo(dtype).min}, {np.iinfo(dtype).max})",
        ]
    if color == "L":
        lines.append("x = x[None, :, :, None]" if layout == "NHWC" else "x = x[None, None, :, :]")
    else:
        lines.append(
            "x = x[None]" if layout == "NHWC" else "x = np.ascontiguousarray(x.transpose(2, 0, 1))[None]"
        )
    lines.append(f"x = x.astype(np.{np.dtype(dtype).name})")
    return lines


def _top_k(out: dict[str, Any], outputs: list[dict[str, Any]]) -> list[str]:
    position = next((i for i, o in enumerate(outputs) if o["name"] == out.get("tensor")), 0)
    chosen = outputs[position]
    lines = [f'scores = interpreter.get_tensor(output_details[{position}]["index"]).reshape(-1)']
    if np.dtype(chosen["dtype"]).kind != "f" and out.get("dequantize", True) and chosen["scale"]:
        lines += [
            f'scale, zero_point = output_details[{position}]["quantization"]',
            "scores = (scores.astype(np.float32) - zero_point) * scale",
        ]
    if out.get("softmax"):
        lines += ["scores = np.exp(scores - scores.max())", "scores = scores / scores.sum()"]
    lines += [
        f"top = np.argsort(-scores)[:{TOP}]",
        'print(json.dumps({"top_k": [[int(i), float(scores[i])] for i in top]}))',
    ]
    return lines


def disagreement(
    manifest: dict[str, Any], answer: dict[str, Any], binary_answer: dict[str, Any], binary_outputs: bytes
) -> str | None:
    """How the script's ``answer`` differs from the binary's for the same image: its top-1 for a
    classifier (``binary_answer``, the JSON line), else every output's shape and first values
    against the raw tensors the binary saved (``binary_outputs``, --save-outputs' .npz)."""
    if is_classifier(manifest):
        mine, theirs = answer["top_k"][0][0], binary_answer["top_k"][0]["index"]
        return None if mine == theirs else f"top-1 {mine}, the binary's {theirs}"
    with np.load(io.BytesIO(binary_outputs)) as saved:
        expected = {key: saved[key] for key in saved.files}
    names = [o["name"] for o in answer["outputs"]]
    if sorted(names) != sorted(expected):
        return f"outputs {names}, the binary's {sorted(expected)}"
    for o in answer["outputs"]:
        ref = expected[o["name"]]
        first = np.asarray(o["first"], dtype=np.float64)
        want = ref.reshape(-1)[: len(first)].astype(np.float64)
        if list(ref.shape) != o["shape"]:
            return f"output {o['name']}: shape {o['shape']}, the binary's {list(ref.shape)}"
        close = (
            np.allclose(first, want, rtol=1e-4, atol=1e-5)
            if ref.dtype.kind == "f"
            else (bool(np.abs(first - want).max(initial=0.0) <= 1))
        )
        if not close:
            return f"output {o['name']}: first values {first.tolist()}, the binary's {want.tolist()}"
    return None


def parse(stdout: str) -> dict[str, Any]:
    """The script's one JSON line."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ValueError(f"expected one JSON line, got {len(lines)}")
    result: dict[str, Any] = json.loads(lines[0])
    return result
