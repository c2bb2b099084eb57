"""The manifest's shape (manifest.json, written by the builder's build.py, read by every mode) and of
the tensor specs in it, for the type checker only: runtime modules import this module under
``if TYPE_CHECKING:``, so that a binary never loads it (nor ``typing``'s TypedDict machinery).

The recipe and target sections stay ``dict[str, Any]``: they are the builder's Recipe and Target as
JSON (recipe.py, target.py), read key by key where they are used."""

from __future__ import annotations

from typing import Any, TypedDict


class TensorSpec(TypedDict):
    """One input or output tensor of the model (model.tensor_info)."""

    name: str
    index: int
    shape: list[int]
    shape_signature: list[int]
    dtype: str  # a NumPy dtype name
    scale: float  # quantization; 0.0 when the tensor is not quantized
    zero_point: int


class Signature(TypedDict):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class ModelEntry(Signature):
    file: str  # in the bundle
    source_name: str  # as given to the build
    sha256: str
    check_digest: str  # BLAKE2b-256, checked at --self-test and --info (payload.py)
    size_bytes: int
    ops: list[str]


class InterpreterEntry(TypedDict):
    name: str
    module: str
    version: str


class SelfTestFiles(TypedDict):
    image: str
    reference: str  # .npz of the build-time outputs, keyed by model.output_keys


class ModelCheck(TypedDict):
    blake2b_256: str
    matches_manifest: bool


class _Added(TypedDict, total=False):
    model_check: ModelCheck  # added by --info, never written into a binary


class Manifest(_Added):
    edgebundle_version: str
    target: dict[str, Any]
    backend: str
    interpreter: InterpreterEntry
    python: str
    numpy: str
    pillow: str
    model: ModelEntry
    recipe: dict[str, Any]
    labels: list[str] | None
    labels_sha256: str | None
    distributions: dict[str, str]
    build_inputs_sha256: str
    selftest: SelfTestFiles
