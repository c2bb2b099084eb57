"""Checking a model against a recipe before anything is built.

The model's signature comes from the target's own interpreter (``probe_signature`` runs it in the
build environment); ``validate`` is pure and names the recipe file and key for every mismatch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .decoders import DETECTION, resolve
from .errors import ConfigError, ModelError, did_you_mean
from .recipe import Recipe
from .runtime.geometry import Geometry, image_geometry
from .tflite import ModelInfo, TFLiteFormatError, read_model

INPUT_DTYPES = ("float32", "float16", "uint8", "int8", "int16")


def check_file(model: Path) -> ModelInfo:
    """Read the model's structure without an interpreter: a file that is not a TFLite model or is
    truncated is refused here with a clear message (a truncated model can crash the interpreter)."""
    try:
        return read_model(model)
    except TFLiteFormatError as exc:
        hint = "; convert it with tf.lite.TFLiteConverter first" if "not a TFLite model" in str(exc) else ""
        raise ModelError(f"{exc}{hint}") from None


_UNRESOLVED = (
    # (pattern, what the op is) from TFLite's error texts
    (re.compile(r"\((Flex\w+)\) failed to prepare"), "a TensorFlow (Flex/Select TF) op"),
    (re.compile(r"unresolved custom op: (\w+)"), "a custom op"),
    (re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'"), "a builtin op version"),
)


def parse_probe_error(model: Path, message: str, returncode: int, interpreter: str = "") -> ModelError:
    """Turn the build-time probe's failure into a one-line, actionable ModelError."""
    if returncode < 0:
        return ModelError(
            f"{model}: the interpreter crashed loading the model (signal {-returncode}); "
            "the file is probably truncated or corrupt"
        )
    text = " ".join(message.split()) or "unknown error"
    runtime = interpreter or "the target's interpreter"
    for pattern, kind in _UNRESOLVED:
        found = pattern.search(text)
        if found:
            op = found.group(1) + (f" v{found.group(2)}" if found.lastindex == 2 else "")
            return ModelError(
                f"{model}: {runtime} cannot run this model: it uses {op}, {kind} the runtime does not "
                "have; re-convert it with TFLite builtin ops only (no SELECT_TF_OPS or custom ops), "
                "or with a converter no newer than the runtime"
            )
    if len(text) > 300:
        text = text[:300] + "..."
    return ModelError(f"{model}: the interpreter refused the model: {text}")


def load_signature(text: str) -> dict[str, Any]:
    sig: dict[str, Any] = json.loads(text)
    return sig


@dataclass(frozen=True)
class Resolved:
    """What validation decides: which input the image feeds, its geometry, and the resolved
    ``[output]`` fields (the decoder and its options as the model settles them)."""

    image_input: str
    geometry: Geometry
    output: dict[str, Any] = field(default_factory=dict)


def validate(recipe: Recipe, sig: dict[str, Any], labels: list[str] | None) -> Resolved:
    inputs: list[dict[str, Any]] = sig["inputs"]
    outputs: list[dict[str, Any]] = sig["outputs"]
    where = recipe.path
    input_names = [t["name"] for t in inputs]

    for name in recipe.constants:
        if name not in input_names:
            raise ConfigError(
                f"{where}: [constants].{name}: model has no input named {name!r}"
                f"{did_you_mean(name, input_names)}; inputs: {', '.join(input_names)}"
            )

    if recipe.input.tensor is not None:
        if recipe.input.tensor not in input_names:
            raise ConfigError(
                f"{where}: [input].tensor: model has no input named {recipe.input.tensor!r}"
                f"{did_you_mean(recipe.input.tensor, input_names)}; "
                f"inputs: {', '.join(input_names)}"
            )
        image = next(t for t in inputs if t["name"] == recipe.input.tensor)
    else:
        candidates = [t for t in inputs if t["name"] not in recipe.constants]
        if len(candidates) != 1:
            listing = ", ".join(f"{t['name']} {t['dtype']}{t['shape']}" for t in inputs)
            raise ConfigError(
                f"{where}: [input].tensor: model has {len(inputs)} inputs ({listing}); set "
                "[input].tensor to the image input and give the others in [constants]"
            )
        image = candidates[0]

    for t in inputs:
        if t["name"] != image["name"] and t["name"] not in recipe.constants:
            raise ConfigError(
                f"{where}: [constants]: model input {t['name']!r} {t['dtype']}{t['shape']} is not "
                f'fed; add  [constants] "{t["name"]}" = VALUE'
            )

    if image["dtype"] not in INPUT_DTYPES:
        raise ConfigError(
            f"{where}: [input]: model input {image['name']!r} has dtype {image['dtype']}; "
            f"images can feed {', '.join(INPUT_DTYPES)}"
        )
    try:
        geo = image_geometry(image["shape"], recipe.input.layout)
    except ValueError as exc:
        raise ConfigError(f"{where}: [input]: model input {image['name']!r}: {exc}") from None
    if geo.channels != recipe.input.channels:
        key = "layout" if recipe.input.layout else "color"
        raise ConfigError(
            f"{where}: [input].{key}: color {recipe.input.color!r} gives "
            f"{recipe.input.channels} channel(s) but model input {image['name']!r} "
            f"{image['shape']} has {geo.channels} in layout {geo.layout}"
        )

    output_names = [t["name"] for t in outputs]
    if recipe.output.tensor is not None and recipe.output.tensor not in output_names:
        raise ConfigError(
            f"{where}: [output].tensor: model has no output named {recipe.output.tensor!r}"
            f"{did_you_mean(recipe.output.tensor, output_names)}; "
            f"outputs: {', '.join(output_names)}"
        )
    chosen = next((t for t in outputs if t["name"] == recipe.output.tensor), outputs[0] if outputs else None)
    if chosen is None:
        raise ModelError(f"{recipe.path}: model has no outputs")
    size = math.prod(chosen["shape"])
    decoded = resolve(
        recipe.output.decoder,
        recipe_path=where,
        output_tensor=recipe.output.tensor,
        top_k=recipe.output.top_k,
        softmax=recipe.output.softmax,
        chosen_size=size,
        sig=sig,
        input_size=(geo.width, geo.height),
        labels=labels,
        labels_path=recipe.output.labels,
    )
    if decoded["decoder"] in DETECTION:
        return Resolved(image_input=image["name"], geometry=geo, output=decoded)
    if recipe.output.top_k is not None and recipe.output.top_k > size:
        raise ConfigError(
            f"{where}: [output].top_k: {recipe.output.top_k} is more than the "
            f"{size} values of output {chosen['name']!r}"
        )
    if labels is not None and len(labels) != size:
        source = recipe.output.labels
        raise ConfigError(
            f"{source}: labels file has {len(labels)} lines but output {chosen['name']!r} "
            f"{chosen['shape']} has {size} values ([output].labels in {where})"
        )
    return Resolved(image_input=image["name"], geometry=geo, output=decoded)
