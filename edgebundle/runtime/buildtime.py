"""Build-time probe, run by the builder inside the build environment (never frozen into a binary).

    python -m ebrt.buildtime signature MODULE DISTRIBUTION MODEL   -> JSON on stdout
    python -m ebrt.buildtime reference APPDIR                      -> writes the self-test files

It runs in the build environment because that is where the target's interpreter package lives; a
crash of the interpreter on a corrupt model (it happens) then kills this process, not the builder.
Errors: one line on stderr, exit 3.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def _signature(module: str, distribution: str, model: str) -> None:
    from .model import ModelLoadError, load_interpreter, signature

    try:
        interpreter = load_interpreter(module, model)
    except ModelLoadError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(3) from None
    sig: dict[str, Any] = dict(signature(interpreter))  # and what the builder needs besides
    ops: list[str] = []
    get_ops = getattr(interpreter, "_get_ops_details", None)
    if get_ops is not None:
        details = get_ops()
        # DELEGATE nodes are XNNPACK taking over builtin ops at load time, not ops of the model.
        ops = sorted({str(op["op_name"]) for op in details} - {"DELEGATE"})
        # The detection op's outputs in its own order (boxes, classes, scores, count), by name: a
        # model's output list may order them differently.
        names = {t["index"]: t["name"] for t in sig["outputs"]}
        for op in details:
            if op["op_name"] == "TFLite_Detection_PostProcess":
                sig["detection_postprocess"] = [names.get(int(i)) for i in op["outputs"]]
    distributions = _bundled_distributions()
    if module.endswith(".litert"):  # LiteRT's C API: its library and Pillow, not the package's Python side
        distributions = {k: v for k, v in distributions.items() if k in (distribution, "pillow")}
    sig.update(
        distributions=distributions,
        ops=ops,
        interpreter_version=metadata.version(distribution),
        python=platform.python_version(),
        machine=platform.machine(),
        numpy=np.__version__,
        pillow=metadata.version("pillow"),
    )
    json.dump(sig, sys.stdout)


# Build tools live in the build environment too, but never in a binary.
_BUILD_ONLY = {
    "pip",
    "setuptools",
    "wheel",
    "pyinstaller",
    "pyinstaller-hooks-contrib",
    "altgraph",
    "packaging",
    "nuitka",
    "ordered-set",
    "zstandard",
    "meson",
    "meson-python",
    "ninja",
    "cython",
    "pyproject-metadata",
}


def _bundled_distributions() -> dict[str, str]:
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name and name not in _BUILD_ONLY:
            found[name] = dist.version
    return dict(sorted(found.items()))


def selftest_image(width: int, height: int) -> np.ndarray[Any, Any]:
    """A deterministic RGB test card a bit larger than the model's input (so resizing is exercised)."""
    w, h = width + width // 2 + 1, height + height // 3 + 1
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    g = (y * 255 // max(h - 1, 1)).astype(np.uint8)
    b = (((x // 3 + y // 3) % 2) * 200 + 20).astype(np.uint8)
    return np.stack([r, g, b], axis=-1)


def _reference(appdir: str) -> None:
    from PIL import Image

    from .geometry import image_geometry
    from .model import named_outputs
    from .npz import save_npz
    from .session import Session, read_manifest

    root = Path(appdir)
    manifest = read_manifest(root)
    session = Session(root, manifest)
    geo = image_geometry(session.image_input["shape"], manifest["recipe"]["input"]["layout"])
    image_path = root / manifest["selftest"]["image"]
    Image.fromarray(selftest_image(geo.width, geo.height), "RGB").save(image_path, format="PNG")
    values, _ = session.infer(session.feeds_for_image(str(image_path)))
    outputs = named_outputs(session.outputs, values)
    save_npz(root / manifest["selftest"]["reference"], outputs)
    summary = {k: {"shape": list(v.shape), "dtype": v.dtype} for k, v in outputs.items()}
    json.dump(summary, sys.stdout)


def main(argv: list[str]) -> None:
    if argv[:1] == ["signature"] and len(argv) == 4:
        _signature(argv[1], argv[2], argv[3])
    elif argv[:1] == ["reference"] and len(argv) == 2:
        _reference(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
