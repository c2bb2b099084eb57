"""Recipe-vs-model validation, with signatures read from the fixture models by the real interpreter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgebundle.errors import ConfigError, ModelError
from edgebundle.modelcheck import check_file, parse_probe_error, validate
from edgebundle.recipe import load_recipe, read_labels
from edgebundle.runtime.model import load_interpreter, signature
from tests.conftest import FIXTURES, MODELS

BAD = FIXTURES / "bad-recipes"


def sig(model: str) -> dict[str, Any]:
    return signature(load_interpreter("tflite_runtime.interpreter", str(MODELS / model)))


def check(recipe_path: str | Path, model: str) -> Any:
    recipe = load_recipe(recipe_path)
    labels = read_labels(recipe.output.labels) if recipe.output.labels else None
    return validate(recipe, sig(model), labels)


@pytest.mark.parametrize("model", ["digits_float.tflite", "digits_int8.tflite", "digits_uint8.tflite"])
def test_digits_recipe_fits_every_digits_model(model: str) -> None:
    resolved = check("digits", model)
    assert resolved.image_input == "serving_default_image:0"
    assert (resolved.geometry.height, resolved.geometry.width, resolved.geometry.channels) == (16, 16, 1)


@pytest.mark.parametrize(
    ("recipe", "model", "layout"),
    [
        ("multi-out", "multi_out.tflite", "NHWC"),
        ("two-inputs", "two_inputs.tflite", "NHWC"),
        ("nchw", "nchw.tflite", "NCHW"),
    ],
)
def test_fixture_recipes_fit_their_models(recipe: str, model: str, layout: str) -> None:
    assert check(FIXTURES / "recipes" / f"{recipe}.toml", model).geometry.layout == layout


@pytest.mark.parametrize(
    ("recipe", "model", "message"),
    [
        (
            "rgb-for-gray-model",
            "digits_float.tflite",
            "[input].color: color 'RGB' gives 3 channel(s) but model input 'serving_default_image:0' "
            "[1, 16, 16, 1] has 1 in layout NHWC",
        ),
        ("top-k-too-large", "digits_float.tflite", "[output].top_k: 11 is more than the 10 values"),
        (
            "unknown-output",
            "digits_float.tflite",
            "[output].tensor: model has no output named 'StatefulPartitionedCall:7' "
            '(did you mean "StatefulPartitionedCall:0"?)',
        ),
        ("two-inputs-unfed", "two_inputs.tflite", "[input].tensor: model has 2 inputs"),
        (
            "unknown-input-tensor",
            "two_inputs.tflite",
            "[input].tensor: model has no input named 'serving_default_imag:0' "
            '(did you mean "serving_default_image:0"?)',
        ),
    ],
)
def test_recipe_that_does_not_fit_the_model(recipe: str, model: str, message: str) -> None:
    path = BAD / f"{recipe}.toml"
    with pytest.raises(ConfigError) as info:
        check(path, model)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_labels_count_names_the_labels_file() -> None:
    with pytest.raises(ConfigError) as info:
        check(BAD / "labels-count.toml", "digits_float.tflite")
    assert str(info.value).startswith(f"{(BAD / 'three-labels.txt').resolve()}: labels file has 3 lines")
    assert "has 10 values" in str(info.value)


def test_not_a_model_is_refused_before_anything_runs() -> None:
    with pytest.raises(ModelError, match=r"not a TFLite model \(no 'TFL3' flatbuffer identifier\)"):
        check_file(MODELS / "not_a_model.tflite")
    # the interpreter would crash on this one (SIGSEGV): our own reader refuses it first
    with pytest.raises(ModelError, match=r"truncated.tflite: truncated or damaged TFLite model$"):
        check_file(MODELS / "truncated.tflite")
    info = check_file(MODELS / "custom_op.tflite")
    assert info.custom_ops == ["FlexMatrixDeterminant"]


def test_probe_errors_become_one_line() -> None:
    crash = parse_probe_error(Path("m.tflite"), "", -11)
    assert "crashed loading the model (signal 11)" in str(crash)
    refusal = json.loads((MODELS / "fixtures.json").read_text())["refusals"]["custom_op"]
    text = json.dumps(refusal)  # the interpreter's own words, recorded when the fixture was made
    assert "FlexMatrixDeterminant" in text
    flex = parse_probe_error(Path("m.tflite"), load_error(MODELS / "custom_op.tflite"), 3, "tflite-runtime")
    assert str(flex) == (
        "m.tflite: tflite-runtime cannot run this model: it uses FlexMatrixDeterminant, a TensorFlow "
        "(Flex/Select TF) op the runtime does not have; re-convert it with TFLite builtin ops only "
        "(no SELECT_TF_OPS or custom ops), or with a converter no newer than the runtime"
    )
    newer = parse_probe_error(Path("m.tflite"), "Didn't find op for builtin opcode 'CONV_2D' version '9'", 3)
    assert "it uses CONV_2D v9, a builtin op version" in str(newer)


def load_error(model: Path) -> str:
    from edgebundle.runtime.model import ModelLoadError

    with pytest.raises(ModelLoadError) as info:
        load_interpreter("tflite_runtime.interpreter", str(model))
    return str(info.value)
