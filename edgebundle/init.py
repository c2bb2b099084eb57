"""``edgebundle init``: a commented recipe drafted from what a model says about itself.

Read from the model (no interpreter): the image input's size, layout, dtype and quantization, the
TFLite metadata when present (the input's NormalizationOptions, the labels file the model carries),
and a decoder guessed from the outputs. Every guess is also a one-line note for the user. A draft for
a classifier or a model with the detection op builds as it is; one for an SSD-like model has TODOs
for the anchor options no model file records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import outputs
from .decoders import CLASSIFICATION_TOP_K, DETECTION_OP
from .errors import ModelError, OutputError
from .modelcheck import check_file
from .runtime.geometry import image_geometry
from .tflite import ModelInfo, Tensor
from .tflite_metadata import ModelMetadata, read_metadata


@dataclass(frozen=True)
class Draft:
    recipe: str
    labels: tuple[str, bytes] | None  # a file to write next to the recipe: name, content
    notes: tuple[str, ...]  # one line per guess


@dataclass
class _Doc:
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)


def _s(value: str) -> str:
    return json.dumps(value)  # a TOML basic string


def _n(value: float) -> str:
    rounded = round(value, 4)
    return str(int(rounded)) if rounded == int(rounded) and abs(rounded) < 1e9 else repr(rounded)


def _numbers(values: tuple[float, ...]) -> str:
    return _n(values[0]) if len(set(values)) == 1 else "[" + ", ".join(_n(v) for v in values) + "]"


def _describe(t: Tensor) -> str:
    quant = f", quantized (scale {t.scale[0]:.6g}, zero point {t.zero_point[0]})" if t.scale else ""
    return f"{t.name!r} {t.dtype}{list(t.shape)}{quant}"


def draft(model: Path) -> Draft:
    """The recipe for ``model`` as TOML text, its labels file (from the metadata) and the notes."""
    info = check_file(model)
    data = model.read_bytes()
    meta = read_metadata(data)
    doc = _Doc()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.stem).strip("-") or "model"
    doc.add(
        f"# Drafted by `edgebundle init` from {model.name}; every guess is marked, check it.",
        "# The keys: README.md (Recipes); detection decoders: docs/detection.md.",
    )
    if meta is not None and (meta.name or meta.description):
        about = " - ".join(x for x in (meta.name, " ".join(meta.description.split())) if x)
        doc.add(f"# The model's metadata: {about[:200]}")
    doc.add(f"name = {_s(name)}", "")
    image = _input(info, meta, doc)
    labels = meta.labels() if meta is not None else None
    label_lines = _count_lines(labels[1]) if labels else None
    classes = _output(info, image, doc)
    label_file = None
    if labels is not None:
        file_name = Path(labels[0].name).name
        if classes is None or classes == label_lines:
            label_file = (file_name, labels[1])
            doc.lines.insert(doc.lines.index("[output]") + 1, f"labels = {_s(file_name)}")
            doc.notes.append(f"labels: {file_name} ({label_lines} lines), from the model's metadata")
        else:
            doc.notes.append(
                f"labels: {file_name} in the model's metadata has {label_lines} lines for {classes} "
                "classes; left out"
            )
    _constants(info, image, doc)
    return Draft(recipe="\n".join(doc.lines) + "\n", labels=label_file, notes=tuple(doc.notes))


def _count_lines(content: bytes) -> int:
    lines = content.decode("utf-8", "replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return len(lines)


def _input(info: ModelInfo, meta: ModelMetadata | None, doc: _Doc) -> Tensor:
    images = [t for t in info.inputs if len(t.shape) == 4]
    if not images:
        shapes = ", ".join(_describe(t) for t in info.inputs)
        raise ModelError(f"no image input (a 4-D tensor) among the model's inputs: {shapes}")
    image = images[0]
    try:
        geo = image_geometry(list(image.shape), None)
    except ValueError as exc:
        raise ModelError(f"input {image.name!r}: {exc}") from None
    plural = "s" if geo.channels > 1 else ""
    doc.add(
        "[input]",
        f"# {_describe(image)}: {geo.layout}, {geo.width}x{geo.height}, {geo.channels} channel{plural}",
    )
    if len(info.inputs) > 1:
        doc.add(f"tensor = {_s(image.name)}")
        doc.notes.append(f"input: {image.name!r} is the image (the first 4-D input)")
    if geo.channels == 1:
        doc.add('color = "L"')
    else:
        doc.add('color = "RGB"                    # or "BGR" for a model trained on OpenCV images')
        if geo.channels != 3:
            doc.add(f"# TODO: the model wants {geo.channels} channels; recipes feed 1 (L) or 3")
            doc.notes.append(f"input: {geo.channels} channels: no recipe color fits; see the TODO")
    if geo.layout == "NCHW":
        doc.add('layout = "NCHW"')
        doc.notes.append(f"input: layout NCHW (channels first), from the shape {list(image.shape)}")
    detector = _yolo_layout(info) is not None
    if detector:
        doc.add('resize = "letterbox"             # as Ultralytics feeds YOLO; or "stretch", "center-crop"')
        doc.add("pad_value = 114")
    else:
        doc.add('resize = "stretch"               # or "letterbox", "center-crop"')
    doc.add('interpolation = "bilinear"')
    norm = None
    if meta is not None and len(meta.normalization) == len(info.inputs):
        norm = meta.normalization[info.inputs.index(image)]
    if image.scale and image.dtype in ("uint8", "int8"):
        # As TFLite's Task Library: a quantized image input is fed the pixels themselves (uint8
        # 0..255, int8 -128..127); mean and std undo the input's quantization.
        offset = -128 if image.dtype == "int8" else 0
        mean, std = image.zero_point[0] - offset, 1 / image.scale[0]
        doc.add("# the pixels as they are (the input's quantization undone)")
        doc.add(f"mean = {_n(mean)}", f"std = {_n(std)}")
        doc.notes.append(f"input: quantized {image.dtype}: mean {_n(mean)}, std {_n(std)} feed the pixels")
    elif norm is not None and norm.mean and norm.std and 0 not in norm.std:
        doc.add("# the model's metadata (NormalizationOptions)")
        doc.add(f"mean = {_numbers(norm.mean)}", f"std = {_numbers(norm.std)}")
        doc.notes.append(
            f"input: mean {_numbers(norm.mean)}, std {_numbers(norm.std)} from the model's metadata"
        )
    else:
        doc.add("# TODO: guessed [0, 1]; many models want [-1, 1]: mean = 127.5, std = 127.5")
        doc.add("mean = 0", "std = 255")
        doc.notes.append("input: mean 0, std 255 (pixels in [0, 1]) guessed: the model does not say")
    return image


def _yolo_layout(info: ModelInfo) -> tuple[str, int] | None:
    """("v5" or "v8", classes) for one [1, N, 5+C] / [1, 4+C, N] output, else None."""
    if len(info.outputs) != 1 or DETECTION_OP in {op.name for op in info.ops}:
        return None
    shape = info.outputs[0].shape
    if len(shape) != 3 or shape[0] != 1 or min(shape[1:]) < 5 or max(shape[1:]) < 16:
        return None
    rows, cols = shape[1], shape[2]
    return ("v8", rows - 4) if rows < cols else ("v5", cols - 5)


def _output(info: ModelInfo, image: Tensor, doc: _Doc) -> int | None:
    """The [output] table; returns the number of classes a labels file must have (None: unknown)."""
    doc.add("", "[output]")
    ops = {op.name for op in info.ops}
    outs = info.outputs
    doc.add(f"# outputs: {'; '.join(_describe(t) for t in outs)}")
    if DETECTION_OP in ops:
        doc.add('decoder = "tflite-detection"')
        doc.add("# score_threshold = 0.5          # the op's boxes with a lower score are dropped")
        doc.notes.append(f'decoder: "tflite-detection": the model ends in the {DETECTION_OP} op')
        return None
    yolo = _yolo_layout(info)
    if yolo is not None:
        layout, classes = yolo
        shape = "[1, 4+C, N]" if layout == "v8" else "[1, N, 5+C]"
        doc.add('decoder = "yolo"', "", "[output.yolo]", f'layout = "{layout}"', 'boxes = "auto"')
        doc.add("score_threshold = 0.25", "iou_threshold = 0.45", "max_detections = 300")
        doc.notes.append(
            f'decoder: "yolo" {layout}: output {list(outs[0].shape)} read as {shape}, {classes} classes'
        )
        return classes
    ssd = _ssd_pair(outs)
    if ssd is not None:
        _ssd(ssd[0], ssd[1], image, doc)
        return ssd[1].shape[-1]
    if len(outs) == 1 and len(outs[0].shape) in (1, 2) and outs[0].shape[-1] > 1:
        size = outs[0].shape[-1]
        if len(outs[0].shape) == 2 and outs[0].shape[0] != 1:
            return _raw(outs, doc)
        softmax = "SOFTMAX" not in ops
        doc.add('decoder = "classification"', f"top_k = {min(CLASSIFICATION_TOP_K, size)}")
        doc.add(
            f"softmax = {str(softmax).lower()}".ljust(33)
            + "# "
            + (
                "the model has no SOFTMAX op: its outputs look like logits"
                if softmax
                else "the model has a SOFTMAX op: probabilities already"
            )
        )
        doc.notes.append(
            f'decoder: "classification": one output of {size} classes; softmax = {str(softmax).lower()} '
            f"(the model {'has no' if softmax else 'has a'} SOFTMAX op)"
        )
        return size
    return _raw(outs, doc)


def _raw(outs: tuple[Tensor, ...], doc: _Doc) -> int | None:
    doc.add('decoder = "raw"                  # every output with its values')
    doc.notes.append(f'decoder: "raw": {len(outs)} output(s) of no layout init knows; every output answers')
    return None


def _ssd_pair(outs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor] | None:
    """(boxes [1, N, K>=4], scores [1, N, C]) when the model has exactly these two outputs."""
    if len(outs) != 2 or any(len(t.shape) != 3 or t.shape[0] != 1 for t in outs):
        return None
    a, b = outs
    if a.shape[1] != b.shape[1]:
        return None

    def boxy(t: Tensor) -> bool:
        return re.search(r"box|regress|loc", t.name, re.IGNORECASE) is not None

    if boxy(a) != boxy(b):
        boxes, scores = (a, b) if boxy(a) else (b, a)
    elif (a.shape[2] == 4) != (b.shape[2] == 4):
        boxes, scores = (a, b) if a.shape[2] == 4 else (b, a)
    else:
        boxes, scores = (a, b) if a.shape[2] >= b.shape[2] else (b, a)
    return (boxes, scores) if boxes.shape[2] >= 4 else None


def _ssd(boxes: Tensor, scores: Tensor, image: Tensor, doc: _Doc) -> None:
    geo = image_geometry(list(image.shape), None)
    n, coords, classes = boxes.shape[1], boxes.shape[2], scores.shape[2]
    doc.add(
        'decoder = "ssd"',
        "",
        "# TODO: the anchors that generated the model's boxes are not in the model file: copy them",
        "# from the model's MediaPipe graph (SsdAnchorsCalculatorOptions) or its training config.",
        f"# They must generate {n} anchors (BlazeFace short range, 128x128: the values below).",
        "[output.anchors]",
        "# num_layers = 4                 # TODO",
        "# min_scale = 0.1484375          # TODO",
        "# max_scale = 0.75               # TODO",
        "# strides = [8, 16, 16, 16]      # TODO",
        "# aspect_ratios = [1.0]          # TODO",
        "# fixed_anchor_size = true       # TODO",
        "anchor_offset_x = 0.5",
        "anchor_offset_y = 0.5",
        f"input_size_width = {geo.width}",
        f"input_size_height = {geo.height}",
        "",
        "[output.detections]",
        f"boxes = {_s(boxes.name)}",
        f"scores = {_s(scores.name)}",
        f"num_boxes = {n}",
        f"num_coords = {coords}",
        f"num_classes = {classes}",
        "box_coord_offset = 0",
        "# TODO: how raw values scale (MediaPipe: the input size for BlazeFace, 10/10/5/5 for SSD",
        "# MobileNet), and the box layout: reverse_output_order = true reads x, y, w, h.",
        f"# x_scale = {geo.width}.0",
        f"# y_scale = {geo.height}.0",
        f"# w_scale = {geo.width}.0",
        f"# h_scale = {geo.height}.0",
        "# reverse_output_order = true",
    )
    if coords > 4 and (coords - 4) % 2 == 0:
        doc.add(
            f"# TODO: {coords - 4} values after the box: {(coords - 4) // 2} keypoints of x, y?",
            "# keypoint_coord_offset = 4",
            f"# num_keypoints = {(coords - 4) // 2}",
            "# num_values_per_keypoint = 2",
        )
    doc.add(
        "sigmoid_score = true# TODO: false when the scores are probabilities already",
        "score_clipping_thresh = 100.0",
        "min_score_thresh = 0.5",
        "",
        "[output.nms]",
        "min_suppression_threshold = 0.3",
        'overlap_type = "intersection-over-union"',
        'algorithm = "default"            # or "weighted" (MediaPipe\'s face detectors)',
    )
    doc.notes.append(
        f'decoder: "ssd": boxes {boxes.name!r} [1, {n}, {coords}] and scores {scores.name!r} '
        f"[1, {n}, {classes}]; the anchors and scales are TODOs in the recipe"
    )


def _constants(info: ModelInfo, image: Tensor, doc: _Doc) -> None:
    others = [t for t in info.inputs if t is not image]
    if not others:
        return
    doc.add("", "[constants]", "# TODO: the value each other input is fed with")
    for t in others:
        doc.add(f"{_s(t.name)} = 0.0")
        doc.notes.append(f"constants: input {t.name!r} is fed 0.0 (a TODO)")


def write(
    model: Path, output: Path | None, *, force: bool, echo: Callable[[str], None]
) -> tuple[Path, Path | None]:
    """Draft the recipe for ``model`` and write it (and the labels file next to it), atomically.
    Refuses to replace an existing file unless ``force``. Returns the paths written."""
    recipe_path = output if output is not None else Path(f"{model.stem}.toml")
    result = draft(model)
    written = [recipe_path]
    labels_path = recipe_path.parent / result.labels[0] if result.labels else None
    if labels_path is not None:
        written.append(labels_path)
    for path in written:
        outputs.check(path, "-o" if path == recipe_path else "the labels file", inputs=[model])
        if not force and path.exists():
            raise OutputError(f"{path}: exists; --force replaces it")
    if labels_path == recipe_path:
        raise OutputError(f"{recipe_path}: -o names the labels file the model carries; choose another name")
    for line in result.notes:
        echo(line)
    if labels_path is not None and result.labels is not None:
        outputs.write(labels_path, result.labels[1])
    outputs.write(recipe_path, result.recipe)
    return recipe_path, labels_path
