"""The NumPy-free program without a compiler: Pillow + LiteRT's C API through ctypes, the
preprocessing with array/memoryview (a lookup table per channel).

    python lean_ctypes.py [--sp DIR[,DIR]] LIBLITERT MODEL IMAGE MODE MEAN STD K [--dump]

Float32 inputs and float32/uint8/int8 outputs (enough for the comparison). Same output as ref.py.
"""

import sys

if sys.argv[1] == "--sp":
    sys.path[:0] = sys.argv[2].split(",")
    del sys.argv[1:3]

import ctypes
import json
import struct
from array import array

from PIL import Image

lib_path, model, image, mode, mean, std, k = sys.argv[1:8]
lib = ctypes.CDLL(lib_path)
P = ctypes.c_void_p


def ok(status, what):
    if status:
        raise RuntimeError(f"LiteRT: {what} failed (status {status})")


def handle(fn, *args):
    out = P()
    ok(getattr(lib, fn)(*args, ctypes.byref(out)), fn)
    return out


def spec(tensor, layout=None):
    raw = ctypes.create_string_buffer(72)  # LiteRtRankedTensorType
    ok(lib.LiteRtGetRankedTensorType(tensor, raw), "LiteRtGetRankedTensorType")
    if layout is not None:  # the compiled model's (after the input's resize)
        raw[4:72] = layout
    etype, bits = struct.unpack_from("<iI", raw)
    dims = tuple(max(d, 1) for d in struct.unpack_from(f"<{bits & 0x7F}i", raw, 8))  # -1: batch 1
    struct.pack_into(f"<{len(dims)}i", raw, 8, *dims)
    q, qt = ctypes.create_string_buffer(16), ctypes.c_int()
    scale = zero = 0
    if lib.LiteRtGetQuantizationTypeId(tensor, ctypes.byref(qt)) == 0 and qt.value == 1:
        ok(lib.LiteRtGetPerTensorQuantization(tensor, q), "LiteRtGetPerTensorQuantization")
        scale, zero = struct.unpack_from("<fxxxxq", q)
    count = 1
    for d in dims:
        count *= d
    return raw, etype, dims, count, scale, zero


SIZE = {1: 4, 3: 1, 9: 1}
env = handle("LiteRtCreateEnvironment", 0, None)
with open(model, "rb") as f:
    data = f.read()
m = handle("LiteRtCreateModelFromBuffer", env, data, len(data))
sig = handle("LiteRtGetModelSignature", m, ctypes.c_size_t(0))
n_out = ctypes.c_size_t()
ok(lib.LiteRtGetNumSignatureOutputs(sig, ctypes.byref(n_out)), "LiteRtGetNumSignatureOutputs")
opts = handle("LiteRtCreateOptions")
lib.LiteRtSetOptionsHardwareAccelerators(opts, 1)
compiled = handle("LiteRtCreateCompiledModel", env, m, opts)


def buffer(tensor_spec):
    return handle(
        "LiteRtCreateManagedTensorBuffer",
        env,
        1,
        tensor_spec[0],
        ctypes.c_size_t(tensor_spec[3] * SIZE[tensor_spec[1]]),
    )


ins = spec(handle("LiteRtGetSignatureInputTensorByIndex", sig, ctypes.c_size_t(0)))
tin = handle("LiteRtGetSignatureInputTensorByIndex", sig, ctypes.c_size_t(0))
raw_in = ctypes.create_string_buffer(72)
ok(lib.LiteRtGetRankedTensorType(tin, raw_in), "LiteRtGetRankedTensorType")
if min(struct.unpack_from(f"<{raw_in[4][0] & 0x7F}i", raw_in, 8)) < 0:
    cdims = (ctypes.c_int * len(ins[2]))(*ins[2])
    ok(
        lib.LiteRtCompiledModelResizeInputTensor(
            compiled, ctypes.c_size_t(0), ctypes.c_size_t(0), cdims, ctypes.c_size_t(len(ins[2]))
        ),
        "resize",
    )
layouts = ctypes.create_string_buffer(68 * n_out.value)
ok(
    lib.LiteRtGetCompiledModelOutputTensorLayouts(compiled, ctypes.c_size_t(0), n_out, layouts, True),
    "layouts",
)
outs = [
    spec(
        handle("LiteRtGetSignatureOutputTensorByIndex", sig, ctypes.c_size_t(i)),
        layouts[68 * i : 68 * i + 68],
    )
    for i in range(n_out.value)
]
in_buf = buffer(ins)
out_bufs = (P * len(outs))(*[buffer(o) for o in outs])

dims = ins[2]
img = Image.open(image).convert(mode).resize((dims[2], dims[1]), Image.BILINEAR)
px = img.tobytes()
means = [float(v) for v in mean.split(",")]
stds = [float(v) for v in std.split(",")]
c = len(means)
x = array("f", bytes(4 * len(px)))
for ch in range(c):
    lut = [(v - means[ch]) / stds[ch] for v in range(256)]
    x[ch::c] = array("f", map(lut.__getitem__, px[ch::c]))
addr = P()
ok(lib.LiteRtLockTensorBuffer(in_buf, ctypes.byref(addr), 1), "LiteRtLockTensorBuffer")
ctypes.memmove(addr, x.tobytes(), len(x) * 4)
lib.LiteRtUnlockTensorBuffer(in_buf)
in_bufs = (P * 1)(in_buf)
ok(
    lib.LiteRtRunCompiledModel(
        compiled, ctypes.c_size_t(0), ctypes.c_size_t(1), in_bufs, ctypes.c_size_t(len(outs)), out_bufs
    ),
    "LiteRtRunCompiledModel",
)
results = []
for o, b in zip(outs, out_bufs, strict=True):
    ok(lib.LiteRtLockTensorBuffer(P(b), ctypes.byref(addr), 0), "LiteRtLockTensorBuffer")
    raw = ctypes.string_at(addr, o[3] * SIZE[o[1]])
    lib.LiteRtUnlockTensorBuffer(P(b))
    if o[1] == 1:
        results.append(memoryview(raw).cast("f"))
    else:
        fmt = "B" if o[1] == 3 else "b"
        results.append(array("f", [(q - o[5]) * o[4] for q in memoryview(raw).cast(fmt)]))
if sys.argv[8:] == ["--dump"]:
    print(json.dumps([r.tolist() for r in results]))
else:
    y = results[0]
    top = sorted(range(len(y)), key=y.__getitem__, reverse=True)[: int(k)]
    print(json.dumps([[i, y[i]] for i in top]))
