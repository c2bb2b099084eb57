from __future__ import annotations

from pathlib import Path

import pytest

from edgebundle.errors import ConfigError
from edgebundle.recipe import bundled_recipes, load_recipe, read_labels
from tests.conftest import FIXTURES, ROOT

BAD = FIXTURES / "bad-recipes"


def test_bundled_recipes_load() -> None:
    names = bundled_recipes()
    assert {"digits", "imagenet-mobilenet"} <= set(names)
    for name in names:
        load_recipe(name)


def test_digits_recipe_resolves_labels_next_to_the_recipe() -> None:
    recipe = load_recipe("digits")
    assert recipe.input.color == "L"
    assert recipe.input.mean == (0.0,)
    assert recipe.input.std == (255.0,)
    assert recipe.output.softmax is True
    assert recipe.output.top_k == 3
    assert recipe.output.labels == (ROOT / "recipes" / "digits-labels.txt").resolve()
    assert read_labels(recipe.output.labels)[:3] == ["zero", "one", "two"]


def test_imagenet_recipe_matches_the_issue() -> None:
    recipe = load_recipe("imagenet-mobilenet")
    assert recipe.input.color == "RGB"
    assert recipe.input.resize == "stretch"
    assert recipe.input.mean == (127.5, 127.5, 127.5)
    assert recipe.input.std == (127.5, 127.5, 127.5)
    assert recipe.output.softmax is True
    assert recipe.output.top_k == 5


def test_defaults_and_manifest_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[input]\ncolor = "BGR"\nmean = 1\n')
    recipe = load_recipe(path)
    assert recipe.name == "r"
    manifest = recipe.to_manifest()
    assert manifest["input"] == {
        "tensor": None,
        "color": "BGR",
        "resize": "stretch",
        "interpolation": "bilinear",
        "mean": [1.0],
        "std": [1.0],
        "layout": None,
        "pad_value": 0.0,
    }
    assert manifest["output"]["top_k"] is None


def test_labels_override_wins(tmp_path: Path) -> None:
    labels = tmp_path / "l.txt"
    labels.write_text("a\nb\n\n")
    recipe = load_recipe("digits", labels_override=labels)
    assert recipe.output.labels == labels
    assert read_labels(labels) == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("typo-key", '[input].colour: unknown key (did you mean "color"?)'),
        ("bad-color", "[input].color: expected one of RGB, BGR, L, got 'RBG' (did you mean \"RGB\"?)"),
        ("mean-count", "[input].mean: expected 1 or 3 numbers for color 'RGB', got 4"),
        ("zero-std", "[input].std: must not contain 0"),
        ("bad-top-k", "[output].top_k: must be at least 1, got 0"),
        ("wrong-type", "[output].softmax: expected true or false, got 'yes'"),
        ("missing-labels", "[output].labels: file not found"),
        ("not-toml", "not valid TOML"),
        ("unknown-table", 'inputs: unknown key (did you mean "input"?)'),
        ("bad-resize", "[input].resize: expected one of stretch, letterbox, center-crop, got 'fit'"),
        ("bad-interpolation", '(did you mean "bicubic"?)'),
        ("input-not-table", "input: expected a table, got int"),
        ("bad-layout", "[input].layout: expected one of NHWC, NCHW, got 'NWHC' (did you mean \"NHWC\"?)"),
        ("bad-constant", "[constants].threshold: expected a number, got 'high'"),
    ],
)
def test_bad_recipe_names_file_and_key(name: str, message: str) -> None:
    path = BAD / f"{name}.toml"
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


def test_unknown_bundled_recipe_suggests() -> None:
    with pytest.raises(ConfigError, match=r'did you mean "digits"\?.*bundled: digits, imagenet-mobilenet'):
        load_recipe("digit")


def test_missing_recipe_file() -> None:
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe("nowhere/r.toml")
