"""[output].decoder and its tables: read from real recipe files, checked against real models."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgebundle.decoders import resolve
from edgebundle.errors import ConfigError
from edgebundle.modelcheck import validate
from edgebundle.recipe import load_recipe, read_labels
from edgebundle.runtime.model import load_interpreter, signature
from tests.conftest import FIXTURES, MODELS

BAD = FIXTURES / "bad-recipes"
GOOD = FIXTURES / "recipes" / "detect-ssd.toml"


def sig(model: str) -> dict[str, Any]:
    return signature(load_interpreter("tflite_runtime.interpreter", str(MODELS / model)))


def test_the_detection_recipe_resolves_against_its_model() -> None:
    recipe = load_recipe(GOOD)
    labels = read_labels(recipe.output.labels) if recipe.output.labels else None
    resolved = validate(recipe, sig("multi_out.tflite"), labels)
    out = resolved.output
    assert out["decoder"] == "ssd"
    # the anchors' input size defaults to the model's
    assert (out["anchors"]["input_size_width"], out["anchors"]["input_size_height"]) == (16, 16)
    assert out["detections"]["box_format"] == "xywh"  # reverse_output_order
    assert out["nms"]["algorithm"] == "weighted"
    manifest = recipe.to_manifest()["output"]
    assert manifest["decoder"] == "ssd"
    assert manifest["anchors"]["input_size_width"] is None
    json.dumps(manifest)


def test_existing_recipes_keep_their_answer(tmp_path: Any) -> None:
    recipe = load_recipe("digits")
    assert recipe.to_manifest()["output"]["decoder"] is None
    s = sig("digits_float.tflite")
    assert validate(recipe, s, None).output == {"decoder": "classification"}
    raw = tmp_path / "raw.toml"
    raw.write_text('[input]\ncolor = "L"\n')
    assert validate(load_recipe(raw), s, None).output == {"decoder": "raw"}
    explicit = tmp_path / "cls.toml"
    explicit.write_text('[input]\ncolor = "L"\n[output]\ndecoder = "classification"\n')
    assert validate(load_recipe(explicit), s, None).output == {"decoder": "classification", "top_k": 5}


def test_the_detection_op_is_chosen_automatically() -> None:
    recipe = load_recipe(FIXTURES / "recipes" / "multi-out.toml")
    outputs = [
        {"name": n, "index": i, "shape": s, "dtype": "float32"}
        for i, (n, s) in enumerate(
            [
                ("TFLite_Detection_PostProcess:3", [1]),
                ("TFLite_Detection_PostProcess", [1, 10, 4]),
                ("TFLite_Detection_PostProcess:2", [1, 10]),
                ("TFLite_Detection_PostProcess:1", [1, 10]),
            ]
        )
    ]
    s = {"outputs": outputs, "ops": ["CONV_2D", "TFLite_Detection_PostProcess"]}
    args: dict[str, Any] = {
        "recipe_path": recipe.path,
        "output_tensor": None,
        "top_k": None,
        "softmax": False,
        "chosen_size": 1,
        "input_size": (16, 16),
        "labels": None,
        "labels_path": None,
    }
    got = resolve(recipe.output.decoder, sig=s, **args)
    assert got["decoder"] == "tflite-detection"
    # without the op's own order: boxes by shape, count by size, classes then scores in model order
    assert got["detections"]["boxes"] == "TFLite_Detection_PostProcess"
    assert got["detections"]["count"] == "TFLite_Detection_PostProcess:3"
    assert got["detections"]["classes"] == "TFLite_Detection_PostProcess:2"
    # the op's own order, as the build-time probe reads it, wins
    s["detection_postprocess"] = [o["name"] for o in (outputs[1], outputs[3], outputs[2], outputs[0])]
    got = resolve(recipe.output.decoder, sig=s, **args)
    assert got["detections"]["classes"] == "TFLite_Detection_PostProcess:1"
    assert got["detections"]["min_score_thresh"] is None
    # a recipe asking for top_k on such a model must say which answer it wants
    with pytest.raises(
        ConfigError, match=r"\[output\]\.decoder: the model ends in TFLite_Detection_PostProcess"
    ):
        resolve(recipe.output.decoder, sig=s, **{**args, "top_k": 3})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("detection-typo-key", '[output.anchors].num_layer: unknown key (did you mean "num_layers"?)'),
        (
            "detection-bad-decoder",
            "[output].decoder: expected one of classification, raw, ssd, tflite-detection, "
            "yolo, got 'sdd' (did you mean \"ssd\"?)",
        ),
        ("detection-missing-table", '[output].anchors: missing table: decoder "ssd" needs [output.anchors]'),
        ("detection-wrong-table", '[output].nms: only used by decoder "ssd" (decoder is "yolo")'),
        ("detection-missing-key", "[output.detections].num_boxes: missing"),
        (
            "detection-keypoints-past-coords",
            "[output.detections].keypoint_coord_offset: 7 keypoints of 2 values "
            "from 4 end at 18, past num_coords = 16",
        ),
        ("detection-strides-count", "[output.anchors].strides: expected num_layers = 4 strides, got 3"),
        ("detection-top-k", '[output].top_k: not used by decoder "yolo"'),
        ("detection-bad-threshold", "[output.yolo].iou_threshold: must be between 0 and 1, got 1.5"),
        ("detection-ssd-key-for-op", '[output.detections].num_boxes: only for decoder "ssd"'),
    ],
)
def test_bad_detection_recipes(name: str, message: str) -> None:
    path = BAD / f"{name}.toml"
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "detection-unknown-tensor",
            "[output.detections].boxes: model has no output named "
            "'StatefulPartitionedCall:3' (did you mean \"StatefulPartitionedCall:1\"?)",
        ),
        (
            "detection-num-boxes",
            "[output.detections].num_boxes: 20 but boxes tensor "
            "'StatefulPartitionedCall:0' float32[1, 4, 4, 8] holds 16",
        ),
        (
            "detection-anchor-count",
            "[output.anchors]: these options generate 32 anchors but [output.detections].num_boxes is 16",
        ),
        (
            "detection-not-yolo",
            "[output].tensor: output 'StatefulPartitionedCall:1' float32[1, 10] is not a YOLO output",
        ),
    ],
)
def test_detection_recipes_that_do_not_fit_the_model(name: str, message: str) -> None:
    path = BAD / f"{name}.toml"
    with pytest.raises(ConfigError) as info:
        validate(load_recipe(path), sig("multi_out.tflite"), None)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_detection_labels_count_names_the_labels_file() -> None:
    recipe = load_recipe(BAD / "detection-labels-count.toml")
    assert recipe.output.labels is not None
    with pytest.raises(ConfigError) as info:
        validate(recipe, sig("multi_out.tflite"), read_labels(recipe.output.labels))
    assert str(info.value).startswith(
        f"{recipe.output.labels}: labels file has 3 lines but the model has 8 classes"
    )
    assert "[output.detections].num_classes" in str(info.value)
