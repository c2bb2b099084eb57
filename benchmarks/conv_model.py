"""Write a compute-heavy classifier (a stack of 3x3 convolutions) as a .tflite file, without TensorFlow.

    python -m venv /tmp/fb && /tmp/fb/bin/pip install tflite flatbuffers numpy
    /tmp/fb/bin/python benchmarks/conv_model.py /tmp/conv.tflite            # 96x96x3, 3 x 32 channels
    .venv/bin/edgebundle build /tmp/conv.tflite --recipe benchmarks/conv.toml -o /tmp/conv
    .venv/bin/python benchmarks/loadtest.py /tmp/conv /tmp/conv.tflite --requests 1000

Why: the digits fixture invokes in ~25 us, so serving it measures Python and HTTP, not inference; this
model spends ~5 ms per invoke in the interpreter (which releases the GIL), the case the load test's
"vs compute bound" ratio is about. Random weights (seeded): the answers are meaningless, the work is
real. The ``tflite`` package is the flatbuffer schema code generated from TFLite's schema.fbs.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import flatbuffers  # type: ignore[import-not-found]
import numpy as np


def _module(name: str) -> Any:
    # ``tflite/__init__.py`` rebinds each submodule name to its class; the builder functions live in
    # the modules.
    return importlib.import_module(f"tflite.{name}")


def conv_model(size: int, channels: int, layers: int, seed: int = 0) -> bytes:
    enums = _module("BuiltinOperator").BuiltinOperator, _module("BuiltinOptions").BuiltinOptions
    op, options = enums
    float32, int32 = _module("TensorType").TensorType.FLOAT32, _module("TensorType").TensorType.INT32
    same, valid = _module("Padding").Padding.SAME, _module("Padding").Padding.VALID
    relu = _module("ActivationFunctionType").ActivationFunctionType.RELU
    rng = np.random.default_rng(seed)

    buffers: list[bytes] = [b""]  # buffer 0 is the empty one by convention
    tensors: list[tuple[str, tuple[int, ...], int, int]] = []
    ops: list[tuple[int, list[int], list[int], str]] = []

    def constant(name: str, array: np.ndarray[Any, Any]) -> int:
        buffers.append(array.tobytes())
        tensors.append((name, array.shape, float32 if array.dtype == np.float32 else int32, len(buffers) - 1))
        return len(tensors) - 1

    def activation(name: str, shape: tuple[int, ...]) -> int:
        tensors.append((name, shape, float32, 0))
        return len(tensors) - 1

    image = x = activation("image", (1, size, size, 3))
    depth = 3
    for i in range(layers):
        weights = rng.standard_normal((channels, 3, 3, depth)) / np.sqrt(9 * depth)
        w = constant(f"conv{i}/weights", weights.astype(np.float32))
        b = constant(f"conv{i}/bias", np.zeros(channels, np.float32))
        y = activation(f"conv{i}", (1, size, size, channels))
        ops.append((0, [x, w, b], [y], "conv"))
        x, depth = y, channels
    y = activation("pool", (1, 1, 1, channels))
    ops.append((1, [x], [y], "pool"))
    shape = constant("flat/shape", np.array([1, channels], np.int32))
    x, y = y, activation("flat", (1, channels))
    ops.append((2, [x, shape], [y], "reshape"))
    w = constant("fc/weights", (rng.standard_normal((10, channels)) * 0.3).astype(np.float32))
    b = constant("fc/bias", np.zeros(10, np.float32))
    x, scores = y, activation("scores", (1, 10))
    ops.append((3, [x, w, b], [scores], "fc"))
    codes = [op.CONV_2D, op.AVERAGE_POOL_2D, op.RESHAPE, op.FULLY_CONNECTED]

    fb = flatbuffers.Builder(1 << 20)

    def ints(start: Any, items: list[int]) -> int:
        start(fb, len(items))
        for v in reversed(items):
            fb.PrependInt32(v)
        return int(fb.EndVector())

    def tables(start: Any, offsets: list[int]) -> int:
        start(fb, len(offsets))
        for v in reversed(offsets):
            fb.PrependUOffsetTRelative(v)
        return int(fb.EndVector())

    B, T, Op, OC = (_module(n) for n in ("Buffer", "Tensor", "Operator", "OperatorCode"))
    buffer_offsets = []
    for data in buffers:
        vector = fb.CreateByteVector(data) if data else None
        B.BufferStart(fb)
        if vector is not None:
            B.BufferAddData(fb, vector)
        buffer_offsets.append(B.BufferEnd(fb))
    tensor_offsets = []
    for name, dims, kind, buffer in tensors:
        name_offset, dims_offset = fb.CreateString(name), ints(T.TensorStartShapeVector, list(dims))
        T.TensorStart(fb)
        T.TensorAddShape(fb, dims_offset)
        T.TensorAddType(fb, kind)
        T.TensorAddBuffer(fb, buffer)
        T.TensorAddName(fb, name_offset)
        tensor_offsets.append(T.TensorEnd(fb))
    op_offsets = []
    for code, inputs, outputs, kind in ops:
        opts, opts_type = _options(fb, kind, size, channels, same, valid, relu, options, ints)
        ins, outs = ints(Op.OperatorStartInputsVector, inputs), ints(Op.OperatorStartOutputsVector, outputs)
        Op.OperatorStart(fb)
        Op.OperatorAddOpcodeIndex(fb, code)
        Op.OperatorAddInputs(fb, ins)
        Op.OperatorAddOutputs(fb, outs)
        Op.OperatorAddBuiltinOptionsType(fb, opts_type)
        Op.OperatorAddBuiltinOptions(fb, opts)
        op_offsets.append(Op.OperatorEnd(fb))
    code_offsets = []
    for code in codes:
        OC.OperatorCodeStart(fb)
        OC.OperatorCodeAddDeprecatedBuiltinCode(fb, code)
        OC.OperatorCodeAddBuiltinCode(fb, code)
        OC.OperatorCodeAddVersion(fb, 1)
        code_offsets.append(OC.OperatorCodeEnd(fb))

    SG, M = _module("SubGraph"), _module("Model")
    all_tensors = tables(SG.SubGraphStartTensorsVector, tensor_offsets)
    all_ops = tables(SG.SubGraphStartOperatorsVector, op_offsets)
    inputs_vec, outputs_vec = (
        ints(SG.SubGraphStartInputsVector, [image]),
        ints(SG.SubGraphStartOutputsVector, [scores]),
    )
    graph_name = fb.CreateString("main")
    SG.SubGraphStart(fb)
    SG.SubGraphAddTensors(fb, all_tensors)
    SG.SubGraphAddInputs(fb, inputs_vec)
    SG.SubGraphAddOutputs(fb, outputs_vec)
    SG.SubGraphAddOperators(fb, all_ops)
    SG.SubGraphAddName(fb, graph_name)
    graph = SG.SubGraphEnd(fb)
    code_vec = tables(M.ModelStartOperatorCodesVector, code_offsets)
    graph_vec = tables(M.ModelStartSubgraphsVector, [graph])
    buffer_vec = tables(M.ModelStartBuffersVector, buffer_offsets)
    description = fb.CreateString(f"edgebundle load-test model: {layers} x conv3x3, {channels} channels")
    M.ModelStart(fb)
    M.ModelAddVersion(fb, 3)
    M.ModelAddOperatorCodes(fb, code_vec)
    M.ModelAddSubgraphs(fb, graph_vec)
    M.ModelAddDescription(fb, description)
    M.ModelAddBuffers(fb, buffer_vec)
    fb.Finish(M.ModelEnd(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def _options(
    fb: Any, kind: str, size: int, channels: int, same: int, valid: int, relu: int, options: Any, ints: Any
) -> tuple[int, int]:
    if kind == "conv":
        C = _module("Conv2DOptions")
        C.Conv2DOptionsStart(fb)
        C.Conv2DOptionsAddPadding(fb, same)
        C.Conv2DOptionsAddStrideW(fb, 1)
        C.Conv2DOptionsAddStrideH(fb, 1)
        C.Conv2DOptionsAddFusedActivationFunction(fb, relu)
        C.Conv2DOptionsAddDilationWFactor(fb, 1)
        C.Conv2DOptionsAddDilationHFactor(fb, 1)
        return C.Conv2DOptionsEnd(fb), options.Conv2DOptions
    if kind == "pool":
        P = _module("Pool2DOptions")
        P.Pool2DOptionsStart(fb)
        P.Pool2DOptionsAddPadding(fb, valid)
        P.Pool2DOptionsAddStrideW(fb, 1)
        P.Pool2DOptionsAddStrideH(fb, 1)
        P.Pool2DOptionsAddFilterWidth(fb, size)
        P.Pool2DOptionsAddFilterHeight(fb, size)
        return P.Pool2DOptionsEnd(fb), options.Pool2DOptions
    if kind == "reshape":
        R = _module("ReshapeOptions")
        new_shape = ints(R.ReshapeOptionsStartNewShapeVector, [1, channels])
        R.ReshapeOptionsStart(fb)
        R.ReshapeOptionsAddNewShape(fb, new_shape)
        return R.ReshapeOptionsEnd(fb), options.ReshapeOptions
    F = _module("FullyConnectedOptions")
    F.FullyConnectedOptionsStart(fb)
    return F.FullyConnectedOptionsEnd(fb), options.FullyConnectedOptions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=96, help="input height and width")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--layers", type=int, default=3)
    args = parser.parse_args()
    args.out.write_bytes(conv_model(args.size, args.channels, args.layers))


if __name__ == "__main__":
    main()
