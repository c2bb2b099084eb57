"""Recipes: how an image becomes the model's input and how outputs are presented.

A recipe is a TOML file (see recipes/*.toml). ``load_recipe`` checks every key and value and returns a
frozen ``Recipe``; ``Recipe.to_manifest`` is the resolved form the runtime reads inside the binary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from .decoders import FLAT_KEYS, TABLES, DecoderSpec
from .decoders import parse as parse_decoder
from .errors import ConfigError, did_you_mean
from .resources import bundled
from .tomlcheck import Table, read_toml

Color = Literal["RGB", "BGR", "L"]
Resize = Literal["stretch", "letterbox", "center-crop"]
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos"]
Layout = Literal["NHWC", "NCHW"]

COLORS: tuple[Color, ...] = ("RGB", "BGR", "L")
RESIZES: tuple[Resize, ...] = ("stretch", "letterbox", "center-crop")
INTERPOLATIONS: tuple[Interpolation, ...] = ("nearest", "bilinear", "bicubic", "lanczos")
LAYOUTS: tuple[Layout, ...] = ("NHWC", "NCHW")


def color_channels(color: Color) -> int:
    """The channels of an image in ``color`` mode: 1 for L, 3 for RGB and BGR."""
    return 1 if color == "L" else 3


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    tensor: str | None = None  # which model input the image feeds; None = the only image input
    color: Color = "RGB"
    resize: Resize = "stretch"
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Layout | None = None  # None = inferred from the model's input shape
    pad_value: float = 0.0  # letterbox padding, in pixel values (0..255)

    @property
    def channels(self) -> int:
        return color_channels(self.color)


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    tensor: str | None = None  # which output softmax/top_k apply to; None = the first
    dequantize: bool = True  # report quantized outputs as real numbers (scale, zero point)
    softmax: bool = False
    top_k: int | None = None
    labels: Path | None = None
    decoder: DecoderSpec = field(default_factory=DecoderSpec)  # how outputs become the answer


@dataclass(frozen=True, kw_only=True)
class Recipe:
    path: Path
    name: str
    input: InputSpec
    output: OutputSpec
    # Inputs other than the image are fed a constant (e.g. a threshold or a flag tensor).
    constants: dict[str, float] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON data, as the runtime inside the binary reads it."""
        i, o = self.input, self.output
        return {
            "name": self.name,
            "input": {
                "tensor": i.tensor,
                "color": i.color,
                "resize": i.resize,
                "interpolation": i.interpolation,
                "mean": list(i.mean),
                "std": list(i.std),
                "layout": i.layout,
                "pad_value": i.pad_value,
            },
            "output": {
                "tensor": o.tensor,
                "dequantize": o.dequantize,
                "softmax": o.softmax,
                "top_k": o.top_k,
                "labels": o.labels.name if o.labels else None,
                **o.decoder.to_manifest(),
            },
            "constants": dict(self.constants),
        }


def bundled_recipes() -> dict[str, Path]:
    """Recipes shipped with edgebundle, by name (file stem)."""
    return bundled("recipes")


def resolve_recipe_path(name_or_path: str) -> Path:
    """A path to a recipe file, or the name of a bundled one (``digits``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists() or "/" in name_or_path:
        return path
    bundled = bundled_recipes()
    if name_or_path in bundled:
        return bundled[name_or_path]
    raise ConfigError(
        f"{name_or_path}: no such recipe file or bundled recipe{did_you_mean(name_or_path, bundled)}"
        f"; bundled: {', '.join(sorted(bundled))}"
    )


def load_recipe(name_or_path: str | Path, labels_override: Path | None = None) -> Recipe:
    path = resolve_recipe_path(str(name_or_path))
    top = Table(path, "", read_toml(path, "recipe"))
    top.check_keys(["name", "input", "output", "constants"])
    name = top.get("name", str, path.stem)

    t = top.sub("input")
    t.check_keys(["tensor", "color", "resize", "interpolation", "mean", "std", "layout", "pad_value"])
    color = cast(Color, t.choice("color", COLORS, "RGB"))
    channels = color_channels(color)
    default_mean = (0.0,)
    default_std = (1.0,)
    mean = t.numbers("mean", default_mean)
    std = t.numbers("std", default_std)
    for key, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise t.error(
                key,
                f"expected 1 or {channels} numbers for color {color!r}, got {len(values)}",
            )
    if any(s == 0 for s in std):
        raise t.error("std", "must not contain 0 (inputs are divided by it)")
    inp = InputSpec(
        tensor=t.optional("tensor", str),
        color=color,
        resize=cast(Resize, t.choice("resize", RESIZES, "stretch")),
        interpolation=cast(Interpolation, t.choice("interpolation", INTERPOLATIONS, "bilinear")),
        mean=mean,
        std=std,
        layout=cast("Layout | None", t.choice("layout", LAYOUTS, None)),
        pad_value=t.get("pad_value", float, 0.0),
    )

    t = top.sub("output")
    t.check_keys(["tensor", "dequantize", "softmax", "top_k", "labels", "decoder", *TABLES, *FLAT_KEYS])
    top_k = t.optional("top_k", int)
    if top_k is not None and top_k < 1:
        raise t.error("top_k", f"must be at least 1, got {top_k}")
    softmax = t.get("softmax", bool, False)
    decoder = parse_decoder(t, top_k, softmax)
    labels: Path | None = None
    if labels_override is not None:
        labels = labels_override
    elif (label_name := t.optional("labels", str)) is not None:
        labels = (path.parent / label_name).resolve()
        if not labels.is_file():
            raise t.error("labels", f"file not found: {labels}")
    if labels_override is not None and not labels_override.is_file():
        raise ConfigError(f"{labels_override}: labels file not found (--labels)")
    out = OutputSpec(
        tensor=t.optional("tensor", str),
        dequantize=t.get("dequantize", bool, True),
        softmax=softmax,
        top_k=top_k,
        labels=labels,
        decoder=decoder,
    )

    t = top.sub("constants")
    constants = {key: t.require(key, float) for key in t.data}
    return Recipe(path=path, name=name, input=inp, output=out, constants=constants)


def read_labels(path: Path) -> list[str]:
    """One label per line; blank trailing lines are ignored, blank lines inside are kept as ''."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read labels file: {exc}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ConfigError(f"{path}: labels file is empty")
    return [line.strip() for line in lines]
