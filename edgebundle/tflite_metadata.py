"""TFLite model metadata, for ``edgebundle init``: the Metadata FlatBuffer in the model's
``TFLITE_METADATA`` metadata buffer (schema: tensorflow/tflite-support,
``tensorflow_lite_support/metadata/metadata_schema.fbs``) and the files zipped onto the end of the
model (the associated files the metadata names, e.g. a labels file).

Only what a recipe can use is read: the inputs' NormalizationOptions (mean, std) and the associated
files with their types. Damaged metadata is treated as absent: a model without it still builds.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass

from .tflite import _Table

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"

# AssociatedFileType
TENSOR_AXIS_LABELS = 2  # one label per line, a class per index of the tensor's last axis
TENSOR_VALUE_LABELS = 3  # one label per line, for class ids that are the tensor's values (detection)
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union: NormalizationOptions


@dataclass(frozen=True)
class AssociatedFile:
    name: str
    type: int
    tensor: str  # the tensor metadata's name ("" for a file of the whole model)


@dataclass(frozen=True)
class Normalization:
    tensor: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    description: str
    normalization: tuple[Normalization | None, ...]  # per model input, in order
    output_files: tuple[tuple[AssociatedFile, ...], ...]  # per model output, in order
    model_files: tuple[AssociatedFile, ...]
    archive: dict[str, bytes]  # the files zipped onto the end of the model

    def labels(self) -> tuple[AssociatedFile, bytes] | None:
        """The first labels file the metadata names (axis labels before value labels) that the model
        really carries."""
        files = [f for per_output in self.output_files for f in per_output] + list(self.model_files)
        for kind in (TENSOR_AXIS_LABELS, TENSOR_VALUE_LABELS):
            for f in files:
                if f.type == kind and f.name in self.archive:
                    return f, self.archive[f.name]
        return None


def read_metadata(data: bytes) -> ModelMetadata | None:
    """The metadata of a TFLite model (already checked by ``tflite.parse_model``), or None."""
    blob = _metadata_buffer(data)
    if blob is None:
        return None
    try:
        return _parse(blob, _archive(data))
    except (struct.error, IndexError, UnicodeDecodeError):
        return None


def _metadata_buffer(data: bytes) -> bytes | None:
    try:
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        buffers = model.tables(4)
        for entry in model.tables(6):  # Model.metadata: [Metadata{name, buffer}]
            if entry.string(0) != METADATA_NAME:
                continue
            buffer = buffers[entry.scalar(1, "I", 0)]
            at = buffer._deref(0)
            if at:
                length = struct.unpack_from("<I", data, at)[0]
                return data[at + 4 : at + 4 + length]
            offset, size = buffer.scalar(1, "Q", 0), buffer.scalar(2, "Q", 0)
            return data[offset : offset + size] if offset else None
    except (struct.error, IndexError, UnicodeDecodeError):
        return None
    return None


def _archive(data: bytes) -> dict[str, bytes]:
    # zipfile finds the central directory from the end of the data: the model in front is skipped.
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return {}


def _parse(blob: bytes, archive: dict[str, bytes]) -> ModelMetadata | None:
    if len(blob) < 8 or blob[4:8] != METADATA_IDENTIFIER:
        return None
    meta = _Table(blob, struct.unpack_from("<I", blob, 0)[0])
    graphs = meta.tables(3)
    graph = graphs[0] if graphs else None
    inputs = graph.tables(2) if graph else []
    outputs = graph.tables(3) if graph else []
    return ModelMetadata(
        name=meta.string(0) or "",
        description=meta.string(1) or "",
        normalization=tuple(_normalization(t) for t in inputs),
        output_files=tuple(_files(t.tables(6), t.string(0) or "") for t in outputs),
        model_files=_files(meta.tables(6), "") + (_files(graph.tables(4), "") if graph else ()),
        archive=archive,
    )


def _normalization(tensor: _Table) -> Normalization | None:
    for unit in tensor.tables(4):  # TensorMetadata.process_units
        if unit.scalar(0, "B", 0) == _NORMALIZATION_OPTIONS:
            options = unit.table(1)
            if options is not None:
                mean, std = tuple(options.vector(0, "f")), tuple(options.vector(1, "f"))
                return Normalization(tensor.string(0) or "", mean, std)
    return None


def _files(tables: list[_Table], tensor: str) -> tuple[AssociatedFile, ...]:
    return tuple(AssociatedFile(t.string(0) or "", t.scalar(2, "b", 0), tensor) for t in tables)
