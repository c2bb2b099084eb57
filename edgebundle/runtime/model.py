"""Loading a .tflite model with the interpreter package the target names (its Python API, which needs
NumPy), describing its tensors, and running it on ``Tensor`` values (runtime/tensors.py)."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .tensors import Tensor

if TYPE_CHECKING:
    from .manifest import Signature, TensorSpec


class ModelLoadError(Exception):
    """The interpreter refused the model (not a TFLite file, truncated, unsupported op)."""


def load_interpreter(module: str, model: str | bytes, threads: int | None = None) -> Any:
    """Create and allocate an interpreter from a model file's path or its bytes (used in place, not
    copied: the interpreter keeps a reference); errors become one-line ModelLoadError messages."""
    interpreter_module = importlib.import_module(module)
    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": model}
    failure = None
    with _quiet_info_logs() as kept:
        try:
            interpreter = interpreter_module.Interpreter(**source, num_threads=threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            failure = str(exc)
    if failure is not None:
        # LiteRT says why on stderr only ("ERROR: ... failed to prepare"): the message carries it.
        errors = [line[7:] for line in kept if line.startswith("ERROR: ") and line[7:].strip() not in failure]
        raise ModelLoadError(one_line("\n".join([failure, *errors])))
    return interpreter


@contextlib.contextmanager
def _quiet_info_logs() -> Iterator[list[str]]:
    """TFLite's C++ side prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to stderr on
    every start, which pollutes the stderr users and health checks read. Capture fd 2 while the
    interpreter is created and pass on every line that is not such chatter (the list it yields holds
    them once the block is done)."""
    kept: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        capture = os.memfd_create("tflite-stderr")
    except (AttributeError, OSError):
        yield kept
        return
    os.dup2(capture, 2)
    try:
        yield kept
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.lseek(capture, 0, os.SEEK_SET)
        with os.fdopen(capture, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        kept.extend(line for line in text.splitlines(keepends=True) if not _chatter(line))
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def _chatter(line: str) -> bool:
    """TFLite's INFO lines, and LiteRT's warnings that a GPU or NPU accelerator is not there (the
    Python packages' LiteRT looks for them at every start; runtime/litert.py asks for the CPU alone)."""
    return line.startswith("INFO: ") or (
        line.startswith("WARNING: ") and "accelerator could not be loaded and registered" in line
    )


def one_line(message: str) -> str:
    """TFLite errors are multi-line and repeat themselves; keep their distinct lines on one line."""
    seen: list[str] = []
    for raw in message.splitlines():
        line = raw.strip()
        if line and line not in seen:
            seen.append(line)
    return " ".join(seen) or "unknown error"


def tensor_info(detail: dict[str, Any]) -> TensorSpec:
    """The JSON-able description of one input or output tensor."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {
        "name": detail["name"],
        "index": int(detail["index"]),
        "shape": [int(d) for d in detail["shape"]],
        "shape_signature": [int(d) for d in detail.get("shape_signature", detail["shape"])],
        "dtype": detail["dtype"] if isinstance(detail["dtype"], str) else _dtype_name(detail["dtype"]),
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def _dtype_name(dtype: Any) -> str:
    import numpy as np  # the Python APIs describe types as NumPy's; they import it anyway

    name: str = np.dtype(dtype).name
    return name


def signature(interpreter: Any) -> Signature:
    return {
        "inputs": [tensor_info(d) for d in interpreter.get_input_details()],
        "outputs": [tensor_info(d) for d in interpreter.get_output_details()],
    }


def output_keys(outputs: list[TensorSpec]) -> list[str]:
    """Names to key saved outputs by: the tensor names, made unique when a model repeats one."""
    keys: list[str] = []
    for info in outputs:
        key = info["name"] or f"output_{info['index']}"
        while key in keys:
            key = f"{key}#{info['index']}"
        keys.append(key)
    return keys


def named_outputs(outputs: list[TensorSpec], values: list[Tensor]) -> dict[str, Tensor]:
    """Output values keyed by ``output_keys``, as saved (``--save-outputs``, the self-test reference)."""
    return dict(zip(output_keys(outputs), values, strict=True))


def run(interpreter: Any, feeds: dict[int, Tensor]) -> list[Tensor]:
    """Set every input by tensor index, invoke, and return all outputs in order."""
    if not hasattr(interpreter, "invoke"):  # LiteRT's C API (litert.py) takes and gives Tensors
        values: list[Tensor] = interpreter.run(feeds)
        return values
    import numpy as np  # only with an interpreter package's Python API, which imports it itself

    for index, value in feeds.items():
        # The Python API refuses read-only arrays: a bytes tensor is copied, a bytearray used in place.
        data = value.data if isinstance(value.data, bytearray) else bytearray(value.data)
        interpreter.set_tensor(index, np.frombuffer(data, dtype=value.dtype).reshape(value.shape))
    interpreter.invoke()
    out = []
    for d in interpreter.get_output_details():
        arr = interpreter.get_tensor(d["index"])
        out.append(Tensor(arr.dtype.name, tuple(int(n) for n in arr.shape), arr.tobytes()))
    return out
