"""The recipe's ``[output].decoder`` and its tables: read strictly from the recipe file (``parse``) and
checked against the model at build time (``resolve``), which also fills in what the model decides
(the automatic decoder, the anchors' input size, the YOLO layout, the detection op's tensors).

Option names are MediaPipe's calculator options (the ``.proto`` field names), so a user can copy them
from a MediaPipe graph: ``[output.anchors]`` SsdAnchorsCalculatorOptions, ``[output.detections]``
TensorsToDetectionsCalculatorOptions (plus our ``boxes``/``scores`` tensor names), ``[output.nms]``
NonMaxSuppressionCalculatorOptions; ``[output.yolo]`` follows Ultralytics' ``non_max_suppression``.
The runtime side is ``edgebundle/runtime/detection.py``; docs/detection.md describes the contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from .errors import ConfigError, did_you_mean
from .runtime.anchors import ssd_anchors
from .tomlcheck import Table

Decoder = Literal["classification", "raw", "ssd", "tflite-detection", "yolo"]
DECODERS: tuple[Decoder, ...] = ("classification", "raw", "ssd", "tflite-detection", "yolo")
DETECTION: tuple[Decoder, ...] = ("ssd", "tflite-detection", "yolo")
DETECTION_OP = "TFLite_Detection_PostProcess"
CLASSIFICATION_TOP_K = 5  # decoder = "classification" without top_k
TABLES = ("anchors", "detections", "nms", "yolo")

_REQUIRED = object()
# key: (type, default); "ints"/"floats" are lists. Defaults are the .proto defaults.
_ANCHORS: dict[str, tuple[Any, Any]] = {
    "num_layers": (int, _REQUIRED),
    "min_scale": (float, _REQUIRED),
    "max_scale": (float, _REQUIRED),
    "input_size_width": (int, None),  # None: the model's input width
    "input_size_height": (int, None),
    "anchor_offset_x": (float, 0.5),
    "anchor_offset_y": (float, 0.5),
    "strides": ("ints", _REQUIRED),
    "feature_map_width": ("ints", []),
    "feature_map_height": ("ints", []),
    "aspect_ratios": ("floats", []),
    "reduce_boxes_in_lowest_layer": (bool, False),
    "interpolated_scale_aspect_ratio": (float, 1.0),
    "fixed_anchor_size": (bool, False),
}
_CLASS_FILTER: dict[str, tuple[Any, Any]] = {
    "min_score_thresh": (float, None),
    "max_results": (int, -1),
    "ignore_classes": ("ints", []),
    "allow_classes": ("ints", []),
}
_SSD_DETECTIONS: dict[str, tuple[Any, Any]] = {
    "boxes": (str, _REQUIRED),
    "scores": (str, _REQUIRED),
    "num_classes": (int, _REQUIRED),
    "num_boxes": (int, _REQUIRED),
    "num_coords": (int, _REQUIRED),
    "box_coord_offset": (int, 0),
    "keypoint_coord_offset": (int, 0),
    "num_keypoints": (int, 0),
    "num_values_per_keypoint": (int, 2),
    "x_scale": (float, _REQUIRED),
    "y_scale": (float, _REQUIRED),
    "w_scale": (float, _REQUIRED),
    "h_scale": (float, _REQUIRED),
    "apply_exponential_on_box_size": (bool, False),
    "reverse_output_order": (bool, False),
    "box_format": (("yxhw", "xywh", "xyxy"), None),  # None: xywh if reverse_output_order, else yxhw
    "sigmoid_score": (bool, False),
    "score_clipping_thresh": (float, None),
    "flip_vertically": (bool, False),
    **_CLASS_FILTER,
}
_OP_DETECTIONS: dict[str, tuple[Any, Any]] = {
    "boxes": (str, None),  # None: found from the op's outputs
    "classes": (str, None),
    "scores": (str, None),
    "count": (str, None),
    **_CLASS_FILTER,
}
_NMS: dict[str, tuple[Any, Any]] = {
    "min_suppression_threshold": (float, 1.0),
    "overlap_type": (("jaccard", "modified-jaccard", "intersection-over-union"), "jaccard"),
    "algorithm": (("default", "weighted"), "default"),
    "max_num_detections": (int, -1),
    "min_score_threshold": (float, -1.0),
}
_YOLO: dict[str, tuple[Any, Any]] = {
    "layout": (("auto", "v5", "v8"), "auto"),
    "boxes": (("auto", "normalized", "pixels"), "auto"),
    "class_agnostic": (bool, False),
    "score_threshold": (float, 0.25),
    "iou_threshold": (float, 0.45),
    "max_detections": (int, 300),
}
# which tables each decoder reads
_USES: dict[str, tuple[str, ...]] = {
    "ssd": ("anchors", "detections", "nms"),
    "tflite-detection": ("detections",),
    "yolo": ("yolo",),
}


@dataclass(frozen=True, kw_only=True)
class DecoderSpec:
    """``decoder`` as written (None: chosen at build time from the model) and its tables, every key
    present with its default."""

    decoder: Decoder | None = None
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        return {"decoder": self.decoder, **{name: self.tables.get(name) for name in TABLES}}


def _read(t: Table, schema: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    t.check_keys(schema)
    out: dict[str, Any] = {}
    for key, (kind, default) in schema.items():
        if default is _REQUIRED and key not in t.data:
            raise t.error(key, "missing")
        if isinstance(kind, tuple):
            out[key] = t.choice(key, kind, default)
        elif kind in ("ints", "floats"):
            out[key] = _list(t, key, int if kind == "ints" else float, default)
        else:
            out[key] = t.get(key, kind, default) if default is not None else t.optional(key, kind)
    return out


def _list(t: Table, key: str, kind: type[Any], default: list[Any]) -> list[Any]:
    value = t.data.get(key, default)
    items = value if isinstance(value, list) else [value]
    for item in items:
        ok = not isinstance(item, bool) and isinstance(item, int if kind is int else (int, float))
        if not ok:
            what = "integers" if kind is int else "numbers"
            raise t.error(key, f"expected a list of {what}, got {value!r}")
    return [kind(item) for item in items]


def parse(output: Table, top_k: int | None, softmax: bool) -> DecoderSpec:
    """``[output].decoder`` and the tables it uses; every value checked that needs no model."""
    decoder = cast("Decoder | None", output.choice("decoder", DECODERS, None))
    flat = [k for k in FLAT_KEYS if k in output.data]
    allowed_flat = {"yolo": FLAT_KEYS, "tflite-detection": ("score_threshold",)}.get(str(decoder), ())
    if [k for k in flat if k not in allowed_flat]:
        key = next(k for k in flat if k not in allowed_flat)
        raise output.error(
            key,
            f'a detection option: not used by decoder "{decoder}"'
            if decoder
            else 'a detection option: set [output].decoder ("yolo", "tflite-detection")',
        )
    given = [name for name in TABLES if name in output.data]
    for name in given:
        users = [d for d, tables in _USES.items() if name in tables]
        allowed = decoder in users or (decoder is None and name == "detections")
        if not allowed:
            which = " or ".join(f'"{d}"' for d in users)
            now = f'decoder is "{decoder}"' if decoder else "[output].decoder is not set"
            raise output.error(name, f"only used by decoder {which} ({now})")
    if decoder in DETECTION:
        for key, why in (("top_k", top_k is not None), ("softmax", softmax)):
            if why:
                raise output.error(key, f'not used by decoder "{decoder}" (it answers with detections)')
        if output.data.get("dequantize") is False:
            raise output.error("dequantize", "detection decoders always dequantize their outputs")
        if decoder != "yolo" and "tensor" in output.data:
            raise output.error("tensor", "name the tensors in [output.detections] (boxes, scores)")
    if decoder == "raw" and top_k is not None:
        raise output.error("top_k", 'only with decoder "classification" (decoder is "raw")')

    tables: dict[str, dict[str, Any]] = {}
    if decoder == "ssd":
        for name, read in (("anchors", _anchors), ("detections", _ssd_detections)):
            if name not in output.data:
                raise output.error(
                    name, 'missing table: decoder "ssd" needs [output.anchors] and [output.detections]'
                )
            tables[name] = read(output.sub(name))
        tables["nms"] = _nms(output.sub("nms"))
    elif decoder == "yolo":
        tables["yolo"] = _yolo(_flat_or_table(output, "yolo", tuple(_YOLO)))
    elif decoder == "tflite-detection" or "detections" in output.data:
        tables["detections"] = _op_detections(output.sub("detections"))
        if "score_threshold" in output.data:  # the op's one option a recipe sets most: in [output] too
            if "min_score_thresh" in output.sub("detections").data:
                raise output.error(
                    "score_threshold", "give it here or as [output.detections].min_score_thresh"
                )
            tables["detections"]["min_score_thresh"] = output.get("score_threshold", float, 0.0)
    return DecoderSpec(decoder=decoder, tables=tables)


# Options a recipe may also write straight into [output] (as the contract lists them),
# besides their own table.
FLAT_KEYS = tuple(_YOLO)


def _flat_or_table(output: Table, name: str, keys: tuple[str, ...]) -> Table:
    """The options of ``[output.NAME]``, or the same keys written straight into ``[output]``."""
    flat = {k: output.data[k] for k in keys if k in output.data}
    if not flat:
        return output.sub(name)
    if name in output.data:
        raise output.error(next(iter(flat)), f"give the options in [output] or in [output.{name}], not both")
    return Table(output.path, output.name, flat)


def _anchors(t: Table) -> dict[str, Any]:
    o = _read(t, _ANCHORS)
    layers = o["num_layers"]
    if layers < 1:
        raise t.error("num_layers", f"must be at least 1, got {layers}")
    if len(o["strides"]) != layers:
        raise t.error("strides", f"expected num_layers = {layers} strides, got {len(o['strides'])}")
    if any(s < 1 for s in o["strides"]):
        raise t.error("strides", f"must be positive, got {o['strides']}")
    for key in ("feature_map_width", "feature_map_height"):
        if o[key] and len(o[key]) != layers:
            raise t.error(key, f"expected num_layers = {layers} values, got {len(o[key])}")
    if bool(o["feature_map_width"]) != bool(o["feature_map_height"]):
        raise t.error("feature_map_height", "give feature_map_width and feature_map_height together")
    for key in ("input_size_width", "input_size_height"):
        if o[key] is not None and o[key] < 1:
            raise t.error(key, f"must be positive, got {o[key]}")
    if any(r <= 0 for r in o["aspect_ratios"]):
        raise t.error("aspect_ratios", f"must be positive, got {o['aspect_ratios']}")
    return o


def _class_filter(t: Table, o: dict[str, Any]) -> None:
    if o["max_results"] == 0:
        raise t.error("max_results", "must not be 0 (-1 or less: no limit)")
    if o["ignore_classes"] and o["allow_classes"]:
        raise t.error("allow_classes", "give ignore_classes or allow_classes, not both")


def _ssd_detections(t: Table) -> dict[str, Any]:
    foreign = [key for key in t.data if key in _YOLO and key not in _SSD_DETECTIONS]
    if foreign:
        raise t.error(foreign[0], 'a YOLO option: put it in [output.yolo] with decoder = "yolo"')
    o = _read(t, _SSD_DETECTIONS)
    for key in ("num_classes", "num_boxes"):
        if o[key] < 1:
            raise t.error(key, f"must be at least 1, got {o[key]}")
    coords = o["num_coords"]
    if coords < 4:
        raise t.error("num_coords", f"must be at least 4 (a box), got {coords}")
    for key in ("x_scale", "y_scale", "w_scale", "h_scale"):
        if o[key] == 0 or not math.isfinite(o[key]):
            raise t.error(key, f"must be a non-zero number (raw values are divided by it), got {o[key]}")
    if not 0 <= o["box_coord_offset"] <= coords - 4:
        raise t.error(
            "box_coord_offset",
            f"the box's 4 values at {o['box_coord_offset']} do not fit in num_coords = {coords}",
        )
    if o["num_keypoints"] < 0:
        raise t.error("num_keypoints", f"must not be negative, got {o['num_keypoints']}")
    if o["num_values_per_keypoint"] < 2:
        raise t.error(
            "num_values_per_keypoint", f"must be at least 2 (x, y), got {o['num_values_per_keypoint']}"
        )
    end = o["keypoint_coord_offset"] + o["num_keypoints"] * o["num_values_per_keypoint"]
    if o["num_keypoints"] and (o["keypoint_coord_offset"] < 0 or end > coords):
        raise t.error(
            "keypoint_coord_offset",
            f"{o['num_keypoints']} keypoints of {o['num_values_per_keypoint']} values from "
            f"{o['keypoint_coord_offset']} end at {end}, past num_coords = {coords}",
        )
    if o["box_format"] is None:
        o["box_format"] = "xywh" if o["reverse_output_order"] else "yxhw"
    _class_filter(t, o)
    return o


def _op_detections(t: Table) -> dict[str, Any]:
    ssd_only = [key for key in t.data if key in _SSD_DETECTIONS and key not in _OP_DETECTIONS]
    if ssd_only:
        raise t.error(ssd_only[0], 'only for decoder "ssd" (the detection op decodes its boxes itself)')
    o = _read(t, _OP_DETECTIONS)
    _class_filter(t, o)
    return o


def _nms(t: Table) -> dict[str, Any]:
    o = _read(t, _NMS)
    if o["max_num_detections"] == 0:
        raise t.error("max_num_detections", "must not be 0 (-1: no limit)")
    return o


def _yolo(t: Table) -> dict[str, Any]:
    o = _read(t, _YOLO)
    for key in ("score_threshold", "iou_threshold"):
        if not 0 <= o[key] <= 1:
            raise t.error(key, f"must be between 0 and 1, got {o[key]}")
    if o["max_detections"] < 1:
        raise t.error("max_detections", f"must be at least 1, got {o['max_detections']}")
    return o


# --- at build time, against the model -------------------------------------------------------------


def _shape(t: dict[str, Any]) -> str:
    return f"{t['name']!r} {t['dtype']}{t['shape']}"


class Check:
    """One recipe's decoder against one model's signature: every error one line naming the key."""

    def __init__(
        self, recipe_path: Any, sig: dict[str, Any], labels: list[str] | None, labels_path: Any
    ) -> None:
        self.where = recipe_path
        self.outputs: list[dict[str, Any]] = sig["outputs"]
        self.sig = sig
        self.labels = labels
        self.labels_path = labels_path

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {message}")

    def output(self, key: str, name: str) -> dict[str, Any]:
        names = [t["name"] for t in self.outputs]
        if name not in names:
            raise self.error(
                key,
                f"model has no output named {name!r}{did_you_mean(name, names)}; outputs: {', '.join(names)}",
            )
        return next(t for t in self.outputs if t["name"] == name)

    def labels_fit(self, classes: int, what: str) -> None:
        if self.labels is not None and len(self.labels) != classes:
            raise ConfigError(
                f"{self.labels_path}: labels file has {len(self.labels)} lines but the model has "
                f"{classes} classes ({what}; [output].labels in {self.where})"
            )


def resolve(
    spec: DecoderSpec,
    *,
    recipe_path: Any,
    output_tensor: str | None,
    top_k: int | None,
    softmax: bool,
    chosen_size: int,
    sig: dict[str, Any],
    input_size: tuple[int, int],
    labels: list[str] | None,
    labels_path: Any,
) -> dict[str, Any]:
    """The resolved ``[output]`` fields for the manifest: ``decoder`` always, plus the decoder's tables
    with what the model decides filled in (and ``top_k`` for an explicit classification)."""
    decoder = spec.decoder
    has_op = DETECTION_OP in sig.get("ops", [])
    if decoder is None:
        if has_op and (top_k is not None or softmax):
            raise ConfigError(
                f"{recipe_path}: [output].decoder: the model ends in {DETECTION_OP}; set decoder = "
                '"tflite-detection" (and drop top_k/softmax), or "classification" to keep them'
            )
        decoder = "tflite-detection" if has_op else ("classification" if top_k or softmax else "raw")
    if decoder in ("classification", "raw"):
        if "detections" in spec.tables:
            raise ConfigError(
                f"{recipe_path}: [output.detections]: the model has no {DETECTION_OP} op; "
                "set [output].decoder"
            )
        out: dict[str, Any] = {"decoder": decoder}
        # Only when asked for by name: a recipe without a decoder answers as it always did (softmax
        # alone lists every output).
        if spec.decoder == "classification" and top_k is None:
            out["top_k"] = min(CLASSIFICATION_TOP_K, chosen_size)
        return out
    check = Check(recipe_path, sig, labels, labels_path)
    if decoder == "ssd":
        return {"decoder": decoder, **_resolve_ssd(spec.tables, check, input_size)}
    if decoder == "yolo":
        return {"decoder": decoder, **_resolve_yolo(spec.tables["yolo"], output_tensor, check)}
    tables = spec.tables.get("detections") or _op_detections(Table(recipe_path, "output.detections", {}))
    return {"decoder": decoder, "detections": _resolve_op(tables, check)}


def _resolve_ssd(
    tables: dict[str, dict[str, Any]], check: Check, input_size: tuple[int, int]
) -> dict[str, Any]:
    det, anchors = dict(tables["detections"]), dict(tables["anchors"])
    key = "[output.detections]"
    for role, per_box, what in (("boxes", "num_coords", "values"), ("scores", "num_classes", "classes")):
        tensor = check.output(f"{key}.{role}", det[role])
        shape = tensor["shape"]
        if not shape or shape[-1] != det[per_box]:
            raise check.error(
                f"{key}.{per_box}",
                f"{det[per_box]} but {role} tensor {_shape(tensor)} has "
                f"{shape[-1] if shape else 0} {what} per box",
            )
        boxes = math.prod(shape) // det[per_box]
        if boxes != det["num_boxes"]:
            raise check.error(
                f"{key}.num_boxes", f"{det['num_boxes']} but {role} tensor {_shape(tensor)} holds {boxes}"
            )
    if anchors["input_size_width"] is None:
        anchors["input_size_width"] = input_size[0]
    if anchors["input_size_height"] is None:
        anchors["input_size_height"] = input_size[1]
    count = len(ssd_anchors(anchors))
    if count != det["num_boxes"]:
        raise check.error(
            "[output.anchors]",
            f"these options generate {count} anchors but {key}.num_boxes is {det['num_boxes']}",
        )
    check.labels_fit(det["num_classes"], f"{key}.num_classes")
    return {"anchors": anchors, "detections": det, "nms": dict(tables["nms"])}


def _resolve_yolo(yolo: dict[str, Any], output_tensor: str | None, check: Check) -> dict[str, Any]:
    tensor = check.outputs[0] if output_tensor is None else check.output("[output].tensor", output_tensor)
    shape = tensor["shape"]
    if len(shape) != 3 or shape[0] != 1:
        raise check.error(
            "[output].tensor", f"output {_shape(tensor)} is not a YOLO output ([1, N, 5+C] or [1, 4+C, N])"
        )
    rows, cols = shape[1], shape[2]
    layout = yolo["layout"]
    if layout == "auto":
        layout = "v8" if rows < cols else "v5"  # boxes outnumber values per box
    classes = rows - 4 if layout == "v8" else cols - 5
    if classes < 1:
        raise check.error(
            "[output.yolo].layout",
            f"{layout} reads output {_shape(tensor)} as "
            + ("[1, 4+C, N]" if layout == "v8" else "[1, N, 5+C]")
            + f", which leaves {classes} classes",
        )
    check.labels_fit(classes, f"output {_shape(tensor)} read as YOLO {layout}")
    return {"tensor": tensor["name"], "yolo": {**yolo, "layout": layout, "num_classes": classes}}


def _resolve_op(det: dict[str, Any], check: Check) -> dict[str, Any]:
    det = dict(det)
    roles = ("boxes", "classes", "scores", "count")
    found = dict(zip(roles, check.sig.get("detection_postprocess") or [], strict=False))
    if len(found) < 4 or None in found.values():
        found = _guess_op_outputs(check.outputs)
    for role in roles:
        if det[role] is None:
            if role not in found:
                raise check.error(
                    "[output.detections]",
                    f"cannot tell which output is the {role}; name them: boxes, classes, scores, count "
                    f"(outputs: {', '.join(_shape(t) for t in check.outputs)})",
                )
            det[role] = found[role]
        check.output(f"[output.detections].{role}", det[role])
    boxes = check.output("[output.detections].boxes", det["boxes"])
    if len(boxes["shape"]) < 2 or boxes["shape"][-1] != 4:
        raise check.error("[output.detections].boxes", f"tensor {_shape(boxes)} is not [1, N, 4] boxes")
    return det


def _guess_op_outputs(outputs: list[dict[str, Any]]) -> dict[str, str]:
    """Without the op's own output order: boxes [1, N, 4], count [1], then classes and scores [1, N]
    in the model's order (the op's order)."""
    found: dict[str, str] = {}
    rest = []
    for t in outputs:
        if len(t["shape"]) == 3 and t["shape"][-1] == 4 and "boxes" not in found:
            found["boxes"] = t["name"]
        elif math.prod(t["shape"]) == 1 and "count" not in found:
            found["count"] = t["name"]
        else:
            rest.append(t["name"])
    if len(rest) == 2:
        found["classes"], found["scores"] = rest
    return found
