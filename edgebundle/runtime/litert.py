"""LiteRT through its C API (the ``libLiteRt.so`` of the ai-edge-litert wheel), with ctypes: no NumPy,
and the library is the only thing a binary loads to run its model (2 ms, where the Python packages'
wrappers import NumPy: ~150 ms on a small gateway's start). The interpreter of the ``litert`` pins
(edgebundle/pins.toml); the builder runs the same code to check a model and make its reference.

The model runs through LiteRT's default signature on the CPU (XNNPACK; one thread unless more are
asked for: ``_add_cpu_threads``). Inputs and outputs are described, like the Python
API's ``get_input_details``, in the subgraph's order with their tensor indices, names, shapes (a
dynamic batch dimension resized to 1), types and per-tensor quantization.

Declarations follow LiteRT v2.1.6's litert/c/ headers (Apache-2.0); the structures' sizes are checked
against its static asserts (LiteRtLayout 68 bytes, LiteRtRankedTensorType 72, per-tensor
quantization 16).
"""

from __future__ import annotations

import _thread  # a lock, without importing threading (~1.5 ms of a start)
import ctypes
import math
import os
import struct
import sys
from typing import Any

from .tensors import Tensor, itemsize

LIBRARY = "libLiteRt.so"
# Where the wheel puts it, relative to a sys.path entry (site-packages, or a frozen program's folder).
PACKAGE_DIR = "ai_edge_litert"

# LiteRtElementType (TfLiteType's values) -> dtype name
_ELEMENT_TYPES = {
    1: "float32",
    2: "int32",
    3: "uint8",
    4: "int64",
    6: "bool",
    7: "int16",
    9: "int8",
    10: "float16",
    11: "float64",
    13: "uint64",
    16: "uint32",
    17: "uint16",
}
_CPU = 1  # kLiteRtHwAcceleratorCpu
_HOST_MEMORY = 1  # kLiteRtTensorBufferTypeHostMemory
_READ, _WRITE = 0, 1  # kLiteRtTensorBufferLockMode
_PER_TENSOR = 1  # kLiteRtQuantizationPerTensor
_LAYOUT = 68  # sizeof(LiteRtLayout): rank (7 bits) and has_strides (1), int32 dims[8], uint32 strides[8]
_RANKED = 72  # sizeof(LiteRtRankedTensorType): int element_type, then the layout

_P = ctypes.c_void_p
# The CPU accelerator's options (LiteRT v2.1.6: litert/runtime/litert_cpu_options.{h,cc}, read by
# accelerators/xnnpack/xnnpack_accelerator.cc and compiled_model.cc): an opaque options item
# "xnnpack" whose payload is a NUL-terminated TOML string such as b"num_threads = 2\n", parsed when
# the model is compiled (XNNPACK's thread pool, and the interpreter's threads). The wheel exports no
# helper that writes it (LiteRtCreateCpuOptions is not in the library). LiteRT < 2.1.3 read a C struct
# under the same name, and 2.2 looks for "cpu_delegate" too: this is for the pinned 2.1.6.
_CPU_OPTIONS = b"xnnpack"
# The library, loaded once, and one environment per process, never destroyed (destroying it logs to
# stderr at every exit).
_loaded: dict[str, Any] = {}
_env_lock = _thread.allocate_lock()


class LiteRtError(RuntimeError):
    """LiteRT refused something (a model it cannot load or compile, an input it cannot take)."""


def library_path() -> str:
    """The libLiteRt.so next to the runtime's modules: under a sys.path entry, as the wheel installs it
    and as a frozen program carries it."""
    for entry in sys.path:
        path = os.path.join(entry or ".", PACKAGE_DIR, LIBRARY)
        if os.path.isfile(path):
            return path
    raise LiteRtError(f"{PACKAGE_DIR}/{LIBRARY} not found on the module search path")


def _library() -> Any:
    lib = _loaded.get("lib")
    if lib is None:
        lib = _loaded["lib"] = ctypes.CDLL(library_path())
    return lib


# The environment's one option (LiteRtEnvOption, 24 bytes: int tag; LiteRtAny value at offset 8 = int
# type, then an int64 at 16): kLiteRtEnvOptionTagAutoRegisterAccelerators (24), a kLiteRtAnyTypeInt
# (2) bitmask of kLiteRtHwAcceleratorCpu (1) alone. By default LiteRT also registers the GPU, NPU and
# WebNN accelerators at every start: it dlopens libLiteRtGpuAccelerator.so and three more by bare
# name, which searches the device's library directories (~130 failed opens here), and would load
# such a library from the system if one were there. Models run on the CPU only.
_ENV_OPTIONS = struct.pack("=i4xi4xq", 24, 2, 1)


def _environment() -> ctypes.c_void_p:
    with _env_lock:
        env = _loaded.get("env")
        if env is None:
            options = ctypes.create_string_buffer(_ENV_OPTIONS, len(_ENV_OPTIONS))
            env = _loaded["env"] = _handle("LiteRtCreateEnvironment", 1, options)
        return env


def _check(status: int, what: str) -> None:
    if status != 0:
        raise LiteRtError(f"{what} failed (LiteRT status {status})")


def _handle(name: str, *args: Any) -> ctypes.c_void_p:
    out = _P()
    _check(getattr(_library(), name)(*args, ctypes.byref(out)), name)
    return out


def _index(n: int) -> ctypes.c_size_t:
    return ctypes.c_size_t(n)


class _Tensor:
    """One input or output: its LiteRT handle, description and ranked type (as LiteRT wants it)."""

    def __init__(self, handle: ctypes.c_void_p) -> None:
        lib = _library()
        self.handle = handle
        name = ctypes.c_char_p()
        _check(lib.LiteRtGetTensorName(handle, ctypes.byref(name)), "LiteRtGetTensorName")
        index = ctypes.c_uint32()
        _check(lib.LiteRtGetTensorIndex(handle, ctypes.byref(index)), "LiteRtGetTensorIndex")
        self.ranked = ctypes.create_string_buffer(_RANKED)
        _check(lib.LiteRtGetRankedTensorType(handle, self.ranked), "LiteRtGetRankedTensorType")
        element, bits = struct.unpack_from("=iI", self.ranked)
        if element not in _ELEMENT_TYPES:
            raise LiteRtError(
                f"tensor {name.value!r} has a type this runtime cannot pass (LiteRT type {element})"
            )
        rank = bits & 0x7F
        signature = list(struct.unpack_from(f"={rank}i", self.ranked, 8))
        scale, zero_point = 0.0, 0
        kind = ctypes.c_int()
        if lib.LiteRtGetQuantizationTypeId(handle, ctypes.byref(kind)) == 0 and kind.value == _PER_TENSOR:
            quant = ctypes.create_string_buffer(16)
            _check(lib.LiteRtGetPerTensorQuantization(handle, quant), "LiteRtGetPerTensorQuantization")
            scale, zero_point = struct.unpack_from("=f4xq", quant)
        self.info: dict[str, Any] = {
            "name": (name.value or b"").decode("utf-8", "replace"),
            "index": int(index.value),
            "shape": [d if d > 0 else 1 for d in signature],
            "shape_signature": signature,
            "dtype": _ELEMENT_TYPES[element],
            "quantization": (scale, zero_point),
        }
        self.set_layout(self.info["shape"])

    def set_layout(self, shape: list[int]) -> None:
        struct.pack_into(f"={len(shape)}i", self.ranked, 8, *shape)
        self.info["shape"] = shape
        self.nbytes = math.prod(shape) * itemsize(self.info["dtype"])


class Interpreter:
    """A model compiled for the CPU, with its buffers; the subset of the Python API edgebundle uses
    (``get_input_details``, ``get_output_details``, ``allocate_tensors``), and ``run``."""

    def __init__(
        self,
        model_path: str | None = None,
        model_content: bytes | None = None,
        num_threads: int | None = None,
    ) -> None:
        if model_content is None:
            if model_path is None:
                raise ValueError("model_path or model_content is needed")
            with open(model_path, "rb") as f:
                model_content = f.read()
        lib = _library()
        self._model_bytes = model_content  # LiteRT reads it in place: it must live as long as the model
        self._env = _environment()
        self._model = _P()
        status = lib.LiteRtCreateModelFromBuffer(
            self._env, model_content, ctypes.c_size_t(len(model_content)), ctypes.byref(self._model)
        )
        if status != 0:
            raise ValueError(f"not a TFLite model LiteRT can read (LiteRT status {status})")
        signature = _handle("LiteRtGetModelSignature", self._model, _index(0))
        counts = []
        for what in ("Inputs", "Outputs"):
            n = ctypes.c_size_t()
            _check(getattr(lib, f"LiteRtGetNumSignature{what}")(signature, ctypes.byref(n)), what)
            counts.append(n.value)
        # In the signature's order (how buffers are passed), described in the subgraph's.
        self._in = [
            _Tensor(_handle("LiteRtGetSignatureInputTensorByIndex", signature, _index(i)))
            for i in range(counts[0])
        ]
        self._out = [
            _Tensor(_handle("LiteRtGetSignatureOutputTensorByIndex", signature, _index(i)))
            for i in range(counts[1])
        ]
        options = _handle("LiteRtCreateOptions")
        try:
            _check(
                lib.LiteRtSetOptionsHardwareAccelerators(options, _CPU),
                "LiteRtSetOptionsHardwareAccelerators",
            )
            if num_threads is not None and num_threads > 1:
                _add_cpu_threads(options, num_threads)  # capped to the CPUs by app.main
            self._compiled = _P()
            status = lib.LiteRtCreateCompiledModel(
                self._env, self._model, options, ctypes.byref(self._compiled)
            )
        finally:
            lib.LiteRtDestroyOptions(options)
        if status != 0:
            raise RuntimeError(
                f"LiteRT cannot compile the model for the CPU (status {status}): an op it lacks?"
            )
        for i, t in enumerate(self._in):
            if t.info["shape"] != t.info["shape_signature"]:  # a dynamic dimension: resize to 1
                dims = (ctypes.c_int * len(t.info["shape"]))(*t.info["shape"])
                _check(
                    lib.LiteRtCompiledModelResizeInputTensor(
                        self._compiled, _index(0), _index(i), dims, ctypes.c_size_t(len(t.info["shape"]))
                    ),
                    "LiteRtCompiledModelResizeInputTensor",
                )
        if self._out:
            layouts = ctypes.create_string_buffer(_LAYOUT * len(self._out))
            _check(
                lib.LiteRtGetCompiledModelOutputTensorLayouts(
                    self._compiled, _index(0), ctypes.c_size_t(len(self._out)), layouts, True
                ),
                "LiteRtGetCompiledModelOutputTensorLayouts",
            )
            for i, t in enumerate(self._out):
                (bits,) = struct.unpack_from("=I", layouts, _LAYOUT * i)
                t.set_layout(list(struct.unpack_from(f"={bits & 0x7F}i", layouts, _LAYOUT * i + 4)))
        self._in_buffers = (_P * len(self._in))(*[self._buffer(t) for t in self._in])
        self._out_buffers = (_P * len(self._out))(*[self._buffer(t) for t in self._out])
        self._by_index = {t.info["index"]: i for i, t in enumerate(self._in)}
        # Described in the subgraph's order, as the Python API lists them.
        by_index = sorted(range(len(self._in)), key=lambda i: self._in[i].info["index"])
        self._in_order = _subgraph_order(signature, self._in, "Input", by_index)
        self._out_order = _subgraph_order(signature, self._out, "Output", list(range(len(self._out))))

    def _buffer(self, t: _Tensor) -> ctypes.c_void_p:
        """A host buffer, zeroed: what an op leaves unwritten (TFLite_Detection_PostProcess past its
        count) reads as 0, as with tflite_runtime, not as whatever the allocation held."""
        buffer = _handle(
            "LiteRtCreateManagedTensorBuffer", self._env, _HOST_MEMORY, t.ranked, ctypes.c_size_t(t.nbytes)
        )
        address = _P()
        _check(_library().LiteRtLockTensorBuffer(buffer, ctypes.byref(address), _WRITE), "lock")
        ctypes.memset(address, 0, t.nbytes)
        _library().LiteRtUnlockTensorBuffer(buffer)
        return buffer

    def allocate_tensors(self) -> None:
        """Done when the model is compiled."""

    def get_input_details(self) -> list[dict[str, Any]]:
        return [dict(self._in[i].info) for i in self._in_order]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [dict(self._out[i].info) for i in self._out_order]

    def run(self, feeds: dict[int, Tensor]) -> list[Tensor]:
        """Fill the inputs (by tensor index), run, and return the outputs in the subgraph's order."""
        lib = _library()
        address = _P()
        for index, value in feeds.items():
            i = self._by_index[index]
            t = self._in[i]
            if len(value.data) != t.nbytes:
                raise LiteRtError(f"input {t.info['name']!r} takes {t.nbytes} bytes, got {len(value.data)}")
            buffer = _P(self._in_buffers[i])  # an array item is a plain int: keep it 64 bits wide
            _check(lib.LiteRtLockTensorBuffer(buffer, ctypes.byref(address), _WRITE), "lock")
            ctypes.memmove(address, value.data, t.nbytes)
            lib.LiteRtUnlockTensorBuffer(buffer)
        _check(
            lib.LiteRtRunCompiledModel(
                self._compiled,
                _index(0),
                ctypes.c_size_t(len(self._in)),
                self._in_buffers,
                ctypes.c_size_t(len(self._out)),
                self._out_buffers,
            ),
            "LiteRtRunCompiledModel",
        )
        out = []
        for i in self._out_order:
            t = self._out[i]
            buffer = _P(self._out_buffers[i])
            _check(lib.LiteRtLockTensorBuffer(buffer, ctypes.byref(address), _READ), "lock")
            data = ctypes.string_at(address, t.nbytes)
            lib.LiteRtUnlockTensorBuffer(buffer)
            out.append(Tensor(t.info["dtype"], tuple(t.info["shape"]), data))
        return out

    def __del__(self) -> None:
        lib = _loaded.get("lib")
        if lib is None:
            return
        for buffers in (getattr(self, "_in_buffers", ()), getattr(self, "_out_buffers", ())):
            for b in buffers:
                lib.LiteRtDestroyTensorBuffer(_P(b))
        for name, attr in (("LiteRtDestroyCompiledModel", "_compiled"), ("LiteRtDestroyModel", "_model")):
            handle = getattr(self, attr, None)
            if handle:
                getattr(lib, name)(handle)


def _add_cpu_threads(options: ctypes.c_void_p, n: int) -> None:
    """Give ``options`` (which then owns it, and frees it with the C library's free) the CPU options
    that set ``n`` threads: XNNPACK's pool starts them when the model is compiled."""
    lib = _library()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = _P
    text = b"num_threads = %d\n\0" % n
    payload = libc.malloc(ctypes.c_size_t(len(text)))
    if not payload:
        raise MemoryError
    ctypes.memmove(payload, text, len(text))
    opaque = _P()
    status = lib.LiteRtCreateOpaqueOptions(
        _CPU_OPTIONS, _P(payload), ctypes.cast(libc.free, _P), ctypes.byref(opaque)
    )
    if status:
        libc.free(_P(payload))
        _check(status, "LiteRtCreateOpaqueOptions")
    status = lib.LiteRtAddOpaqueOptions(options, opaque)
    if status:
        lib.LiteRtDestroyOpaqueOptions(opaque)  # and the payload with it
        _check(status, "LiteRtAddOpaqueOptions")


def _subgraph_order(
    signature: ctypes.c_void_p, tensors: list[_Tensor], kind: str, fallback: list[int]
) -> list[int]:
    """Positions of ``tensors`` (the signature's inputs or outputs, ``kind`` "Input" or "Output") in
    the subgraph's order; ``fallback`` when LiteRT cannot say."""
    lib = _library()
    try:
        subgraph = _handle("LiteRtGetSignatureSubgraph", signature)
        n = ctypes.c_size_t()
        _check(getattr(lib, f"LiteRtGetNumSubgraph{kind}s")(subgraph, ctypes.byref(n)), f"{kind}s")
        order = []
        for j in range(n.value):
            tensor = _handle(f"LiteRtGetSubgraph{kind}", subgraph, _index(j))
            index = ctypes.c_uint32()
            _check(lib.LiteRtGetTensorIndex(tensor, ctypes.byref(index)), "LiteRtGetTensorIndex")
            order.append(next(i for i, t in enumerate(tensors) if t.info["index"] == index.value))
    except (LiteRtError, StopIteration):
        return fallback
    return order if sorted(order) == list(range(len(tensors))) else fallback
