"""Reading a .tflite file's structure without an interpreter: tensors of the main subgraph, the op list
with versions, custom ops. Works for models no runtime can load (to name the op that stops them) and
for any target architecture.

A .tflite file is a FlatBuffer (schema: tensorflow/lite/schema/schema.fbs); this reads only the
fields below, following the FlatBuffers binary format: tables reached through a vtable of field
offsets, vectors and strings through 32-bit relative offsets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tflite_schema import BUILTIN_OPS, TENSOR_TYPES

CUSTOM = 32


class TFLiteFormatError(ValueError):
    """Not a TFLite FlatBuffer, or a damaged one."""


class _Table:
    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable = vtable
        self.vsize = struct.unpack_from("<H", buf, vtable)[0]

    def _field(self, index: int) -> int:
        entry = 4 + 2 * index
        if entry >= self.vsize:
            return 0
        offset: int = struct.unpack_from("<H", self.buf, self.vtable + entry)[0]
        return self.pos + offset if offset else 0

    def scalar(self, index: int, fmt: str, default: Any) -> Any:
        at = self._field(index)
        return struct.unpack_from("<" + fmt, self.buf, at)[0] if at else default

    def _deref(self, index: int) -> int:
        at = self._field(index)
        return at + struct.unpack_from("<I", self.buf, at)[0] if at else 0

    def string(self, index: int) -> str | None:
        at = self._deref(index)
        if not at:
            return None
        length = struct.unpack_from("<I", self.buf, at)[0]
        return self.buf[at + 4 : at + 4 + length].decode("utf-8", "replace")

    def vector(self, index: int, fmt: str) -> list[Any]:
        at = self._deref(index)
        if not at:
            return []
        length = struct.unpack_from("<I", self.buf, at)[0]
        return list(struct.unpack_from(f"<{length}{fmt}", self.buf, at + 4))

    def tables(self, index: int) -> list[_Table]:
        at = self._deref(index)
        if not at:
            return []
        length = struct.unpack_from("<I", self.buf, at)[0]
        out = []
        for i in range(length):
            element = at + 4 + 4 * i
            out.append(_Table(self.buf, element + struct.unpack_from("<I", self.buf, element)[0]))
        return out

    def table(self, index: int) -> _Table | None:
        at = self._deref(index)
        return _Table(self.buf, at) if at else None


# Custom op codes every TFLite interpreter registers with its builtins (BuiltinOpResolver).
INTERPRETER_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess"})


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": list(self.scale),
            "zero_point": list(self.zero_point),
        }


@dataclass(frozen=True)
class Op:
    name: str  # a builtin's name, or the custom op's own name
    version: int
    custom: bool

    def label(self) -> str:
        return f"{self.name} (custom)" if self.custom else f"{self.name} v{self.version}"


@dataclass(frozen=True)
class ModelInfo:
    schema_version: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    ops: tuple[Op, ...]  # distinct op codes used by the model, in file order
    subgraphs: int
    description: str

    @property
    def custom_ops(self) -> list[str]:
        """Custom ops a runtime must bring; those TFLite's interpreter registers itself (written as
        custom ops in the file, but builtins of every interpreter) are not among them."""
        return [op.name for op in self.ops if op.custom and op.name not in INTERPRETER_CUSTOM_OPS]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "description": self.description,
            "subgraphs": self.subgraphs,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "ops": [op.label() for op in self.ops],
            "custom_ops": self.custom_ops,
        }


def read_model(path: Path) -> ModelInfo:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TFLiteFormatError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_model(data, path)


def parse_model(data: bytes, path: Path = Path("<memory>")) -> ModelInfo:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteFormatError(f"{path}: not a TFLite model (no 'TFL3' flatbuffer identifier)")
    try:
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        codes = [_op(code) for code in model.tables(1)]
        subgraphs = model.tables(2)
        if not subgraphs:
            raise TFLiteFormatError(f"{path}: the model has no subgraph")
        _check_buffers(model, len(data), path)
        main = subgraphs[0]
        tensors = main.tables(0)
        used = sorted({op.scalar(0, "I", 0) for op in main.tables(3)})
        ops = tuple(codes[i] for i in used if i < len(codes))
        return ModelInfo(
            schema_version=model.scalar(0, "I", 0),
            inputs=tuple(_tensor(tensors[i]) for i in main.vector(1, "i")),
            outputs=tuple(_tensor(tensors[i]) for i in main.vector(2, "i")),
            ops=ops,
            subgraphs=len(subgraphs),
            description=model.string(3) or "",
        )
    except (struct.error, IndexError, UnicodeDecodeError):
        raise TFLiteFormatError(f"{path}: truncated or damaged TFLite model") from None


def _check_buffers(model: _Table, size: int, path: Path) -> None:
    """Weights live in Model.buffers: inline (a byte vector) or, for models over 2 GB, at an
    offset after the FlatBuffer. A cut-off file has buffers pointing past its end."""
    for buffer in model.tables(4):
        at = buffer._deref(0)
        if at and at + 4 + struct.unpack_from("<I", buffer.buf, at)[0] > size:
            raise TFLiteFormatError(f"{path}: truncated or damaged TFLite model")
        offset, length = buffer.scalar(1, "Q", 0), buffer.scalar(2, "Q", 0)
        if offset and offset + length > size:
            raise TFLiteFormatError(f"{path}: truncated or damaged TFLite model")


def _op(code: _Table) -> Op:
    deprecated = code.scalar(0, "b", 0)
    builtin = max(code.scalar(3, "i", 0), deprecated)  # schema v3a: the larger of the two is right
    version = code.scalar(2, "i", 1)
    if builtin == CUSTOM:
        return Op(name=code.string(1) or "CUSTOM", version=version, custom=True)
    return Op(name=BUILTIN_OPS.get(builtin, f"BUILTIN_{builtin}"), version=version, custom=False)


def _tensor(t: _Table) -> Tensor:
    q = t.table(4)
    return Tensor(
        name=t.string(3) or "",
        shape=tuple(t.vector(0, "i")),
        dtype=TENSOR_TYPES.get(t.scalar(1, "b", 0), "unknown"),
        scale=tuple(q.vector(2, "f")) if q else (),
        zero_point=tuple(q.vector(3, "q")) if q else (),
    )
