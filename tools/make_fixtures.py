"""Generate edgebundle's committed test fixtures (models, digit images, odd images).

Rerun from the repository root, in a dev-only venv outside the repo (TensorFlow is needed here
only; the package and its tests use tflite-runtime)::

    python3.11 -m venv /work/fixture-venv
    /work/fixture-venv/bin/pip install -r tools/requirements-fixtures.txt
    /work/fixture-venv/bin/python tools/make_fixtures.py

Everything is seeded and TF ops run deterministically, so with the same package versions a
rerun rewrites byte-identical files (about 15 s on 2 cores, training ~8 s).
Outputs: tests/fixtures/models/*.tflite + fixtures.json, tests/fixtures/digits/,
tests/fixtures/images/ and recipes/digits-labels.txt. The digits preprocessing below
(``preprocess``) must stay identical to recipes/digits.toml as the runtime applies it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Determinism knobs; they must be set before TensorFlow is imported (lazily, in the functions).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ["TF_DETERMINISTIC_OPS"] = "1"

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
DIGITS = FIXTURES / "digits"
IMAGES = FIXTURES / "images"
LABELS_FILE = ROOT / "recipes" / "digits-labels.txt"

SEED = 0
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TARGET_ACCURACY = 0.97  # stop training once the Keras model reaches this on the held-out set
REQUIRED_ACCURACY = 0.95  # the float TFLite model must reach this or the script fails
MIN_EPOCHS, MAX_EPOCHS, EPOCH_CHUNK = 10, 80, 5
SAMPLE_MIN_PROBABILITY = 0.99

NpArray = np.ndarray[Any, Any]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def scrub(message: str) -> str:
    """Make an error text checkout-independent (absolute paths -> repo-relative)."""
    return message.replace(str(ROOT) + os.sep, "")


# --------------------------------------------------------------------------------------------
# digits data
# --------------------------------------------------------------------------------------------


def digit_image(pixels8x8: NpArray) -> Image.Image:
    """sklearn digit (8x8, 0..16) -> 32x32 'L' image: x*255/16 rounded half up, 4x NEAREST."""
    u8 = np.floor(pixels8x8.astype(np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)
    return Image.fromarray(u8, mode="L").resize((32, 32), Image.Resampling.NEAREST)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def preprocess(src: Path | io.BytesIO) -> NpArray:
    """The runtime's digits recipe: convert('L'), 16x16 BILINEAR, (x - 0) / 255 -> [1,16,16,1]."""
    with Image.open(src) as im:
        small = im.convert("L").resize((16, 16), Image.Resampling.BILINEAR)
    x = (np.asarray(small, dtype=np.float32) - np.float32(0.0)) / np.float32(255.0)
    return x.reshape(1, 16, 16, 1)


def make_digits() -> tuple[NpArray, NpArray, list[tuple[str, int]]]:
    """Write the held-out PNGs + CSV; return training tensors and held-out (file, label) pairs."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train_idx, hold_idx = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=SEED)
    train_idx, hold_idx = np.sort(train_idx), np.sort(hold_idx)

    # Training inputs go through exactly the runtime path: PNG bytes -> preprocess().
    x_train = np.concatenate(
        [preprocess(io.BytesIO(png_bytes(digit_image(digits.images[i])))) for i in train_idx]
    )
    y_train = digits.target[train_idx].astype(np.int64)

    shutil.rmtree(DIGITS, ignore_errors=True)
    (DIGITS / "holdout").mkdir(parents=True)
    holdout: list[tuple[str, int]] = []
    for n, i in enumerate(hold_idx):
        name = f"holdout/{n:04d}.png"
        (DIGITS / name).write_bytes(png_bytes(digit_image(digits.images[i])))
        holdout.append((name, int(digits.target[i])))
    with (DIGITS / "holdout.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "label"])
        writer.writerows(holdout)
    return x_train, y_train, holdout


def holdout_inputs(holdout: list[tuple[str, int]]) -> tuple[NpArray, NpArray]:
    x = np.concatenate([preprocess(DIGITS / name) for name, _ in holdout])
    return x, np.array([label for _, label in holdout])


# --------------------------------------------------------------------------------------------
# TensorFlow side: training and conversion
# --------------------------------------------------------------------------------------------


def seed_tensorflow() -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    return tf


def train_digits(
    x_train: NpArray, y_train: NpArray, x_hold: NpArray, y_hold: NpArray
) -> tuple[Any, int, float]:
    """Train the small CNN (logits out, no softmax); return a batch-1 export model."""
    tf = seed_tensorflow()
    keras = tf.keras
    stack = [
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="logits"),
    ]

    def apply(x: Any) -> Any:
        for layer in stack:
            x = layer(x)
        return x

    train_in = keras.Input((16, 16, 1), name="image")
    model = keras.Model(train_in, apply(train_in), name="digits_train")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    epochs, acc = 0, 0.0
    while epochs < MAX_EPOCHS:
        model.fit(
            x_train,
            y_train,
            batch_size=32,
            epochs=epochs + EPOCH_CHUNK,
            initial_epoch=epochs,
            shuffle=True,
            verbose=0,
        )
        epochs += EPOCH_CHUNK
        pred = model.predict(x_hold, batch_size=256, verbose=0).argmax(axis=1)
        acc = float((pred == y_hold).mean())
        print(f"  epoch {epochs:3d}: keras held-out accuracy {acc:.4f}")
        if epochs >= MIN_EPOCHS and acc >= TARGET_ACCURACY:
            break
    # Same layers (shared weights), fixed batch 1: what the runtime feeds.
    export_in = keras.Input((16, 16, 1), batch_size=1, name="image")
    return keras.Model(export_in, apply(export_in), name="digits"), epochs, acc


def convert(model: Any, configure: Callable[[Any], None] | None = None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if configure is not None:
        configure(converter)
    return bytes(converter.convert())


def quantized(x_train: NpArray, io_type: Any) -> Callable[[Any], None]:
    import tensorflow as tf

    def representative() -> Iterator[list[NpArray]]:
        for i in range(len(x_train)):
            yield [x_train[i : i + 1]]

    def configure(converter: Any) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type

    return configure


def set_random_weights(model: Any, seed: int) -> None:
    """Deterministic weights from NumPy (independent of TF's RNG), fan-in scaled to stay tame."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        scale = 0.1 if w.ndim == 1 else 1.0 / np.sqrt(np.prod(w.shape[:-1]))
        weights.append((rng.standard_normal(w.shape) * scale).astype(np.float32))
    model.set_weights(weights)


def shape_models() -> dict[str, bytes]:
    """Untrained models with unusual tensor layouts (multi-output, two inputs, channels-first)."""
    tf = seed_tensorflow()
    layers = tf.keras.layers
    out: dict[str, bytes] = {}

    image = tf.keras.Input((16, 16, 3), batch_size=1, name="image")
    feat = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(image)
    feat = layers.MaxPooling2D(4, name="features")(feat)
    logits = layers.Dense(10, name="logits")(layers.Flatten(name="flatten")(feat))
    model = tf.keras.Model(image, {"logits": logits, "features": feat}, name="multi_out")
    set_random_weights(model, 1)
    out["multi_out"] = convert(model)

    image = tf.keras.Input((24, 32, 3), batch_size=1, name="image")
    aux = tf.keras.Input((3,), batch_size=1, name="aux")
    x = layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(image)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Concatenate(name="concat")([x, aux])
    scores = layers.Dense(5, name="scores")(x)
    model = tf.keras.Model({"image": image, "aux": aux}, scores, name="two_inputs")
    set_random_weights(model, 2)
    out["two_inputs"] = convert(model)

    image = tf.keras.Input((3, 20, 28), batch_size=1, name="image_nchw")
    x = layers.Permute((2, 3, 1), name="to_nhwc")(image)
    x = layers.Conv2D(6, 3, activation="relu", name="conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    scores = layers.Dense(4, name="scores")(x)
    model = tf.keras.Model(image, scores, name="nchw")
    set_random_weights(model, 3)
    out["nchw"] = convert(model)
    return out


def custom_op_model() -> bytes:
    """A valid model using MatrixDeterminant, which only exists as a Flex (select TF) op."""
    import tensorflow as tf

    class Det(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 1], tf.float32, name="image")])
        def __call__(self, image: Any) -> Any:
            det = tf.linalg.det(tf.reshape(image, [1, 16, 16]) + tf.eye(16))
            return {"det": tf.reshape(det, [1, 1])}

    module = Det()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.__call__.get_concrete_function()], module
    )
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    return bytes(converter.convert())


def full_tf_loads(path: Path) -> bool:
    """Whether full TensorFlow's interpreter (which links the Flex delegate) runs the model."""
    import tensorflow as tf

    try:
        interp = tf.lite.Interpreter(model_path=str(path))
        interp.allocate_tensors()
        interp.invoke()
    except (RuntimeError, ValueError):
        return False
    return True


# --------------------------------------------------------------------------------------------
# tflite-runtime side: read back, evaluate, check refusals
# --------------------------------------------------------------------------------------------


def interpreter(path: Path) -> Any:
    from tflite_runtime.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    return interp


def tensor_info(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero_point = detail["quantization"]
    return {
        "name": detail["name"],
        "index": int(detail["index"]),
        "shape": [int(d) for d in detail["shape"]],
        "shape_signature": [int(d) for d in detail["shape_signature"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
    }


def describe(path: Path) -> dict[str, Any]:
    interp = interpreter(path)
    # Smoke run on zeros: every valid fixture must invoke under tflite-runtime 2.14.
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    interp.invoke()
    data = path.read_bytes()
    return {
        "file": rel(path),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "inputs": [tensor_info(d) for d in interp.get_input_details()],
        "outputs": [tensor_info(d) for d in interp.get_output_details()],
        "signatures": interp.get_signature_list(),
    }


def quantize_input(x: NpArray, detail: dict[str, Any]) -> NpArray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(x / np.float32(scale) + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def softmax(logits: NpArray) -> NpArray:
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run_digits(path: Path, x: NpArray) -> NpArray:
    """Raw output rows (logits, or int8/uint8 quantized logits) for each [1,16,16,1] sample."""
    interp = interpreter(path)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    rows = []
    for sample in x:
        interp.set_tensor(inp["index"], quantize_input(sample[None], inp))
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


# Run in a child process: tflite-runtime 2.14 does not verify the flatbuffer, so a truncated
# model can crash the interpreter (SIGSEGV) instead of raising.
_PROBE = """
import json, sys
from tflite_runtime.interpreter import Interpreter
path, mode = sys.argv[1], sys.argv[2]
stage = "construct"
try:
    if mode == "model_path":
        interp = Interpreter(model_path=path)
    else:
        with open(path, "rb") as f:
            interp = Interpreter(model_content=f.read())
    stage = "allocate_tensors"
    interp.allocate_tensors()
except Exception as exc:
    print(json.dumps({"stage": stage, "exception": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"stage": "none", "exception": None, "message": "loaded fine"}))
"""


def refusal(path: Path) -> dict[str, Any]:
    """How tflite-runtime fails on `path`, loaded by path and from bytes (it must not load)."""
    result: dict[str, Any] = {"file": rel(path)}
    for mode in ("model_path", "model_content"):
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, rel(path), mode],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            outcome = {"stage": "construct", "exception": None, "crash": sig}
        elif proc.returncode != 0:
            raise SystemExit(f"probe of {rel(path)} failed:\n{proc.stderr}")
        else:
            outcome = json.loads(proc.stdout.strip().splitlines()[-1])
            if outcome["exception"] is None:
                raise SystemExit(f"{rel(path)}: tflite-runtime accepted a model it must refuse")
            outcome["message"] = scrub(outcome["message"])
        result[mode] = outcome
    return result


# --------------------------------------------------------------------------------------------
# odd images
# --------------------------------------------------------------------------------------------


def make_images() -> dict[str, Any]:
    shutil.rmtree(IMAGES, ignore_errors=True)
    IMAGES.mkdir(parents=True)
    notes: dict[str, str] = {}

    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 255 // 63, yy * 255 // 47, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(IMAGES / "rgb.jpg", quality=90)
    notes["rgb.jpg"] = "64x48 RGB gradient: R rises left->right, G top->bottom, B = 128"

    halves = np.zeros((20, 40, 3), dtype=np.uint8)
    halves[:, :20] = (255, 0, 0)
    halves[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    Image.fromarray(halves, "RGB").save(IMAGES / "exif_rotated.jpg", quality=95, exif=exif)
    notes["exif_rotated.jpg"] = (
        "stored 40x20, left half red / right half blue, EXIF Orientation=6; "
        "exif_transpose -> 20x40 with red on top, blue at the bottom"
    )

    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.arange(32, dtype=np.uint8)[None, :] * 8
    rgba[..., 3] = np.where(np.arange(32)[None, :] < 16, 255, 0)
    rgba[16:, :, 3] = np.arange(32, dtype=np.uint8)[None, :] * 8  # bottom half: alpha ramp
    Image.fromarray(rgba, "RGBA").save(IMAGES / "rgba.png")
    notes["rgba.png"] = (
        "32x32 RGBA: top half left opaque / right fully transparent, bottom half alpha ramp 0..248"
    )

    pal = Image.new("P", (24, 16))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    pal.putdata([(x // 6) % 4 for _ in range(16) for x in range(24)])
    pal.save(IMAGES / "palette.png")
    notes["palette.png"] = "24x16 mode P, 4-colour palette black/red/green/blue in vertical bands"

    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    Image.fromarray(ramp).save(IMAGES / "gray16.png")
    notes["gray16.png"] = "16x16 16-bit grayscale ramp 0..65535 (step 257)"

    noise = np.random.default_rng(SEED).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    whole = png_bytes(Image.fromarray(noise, "RGB"))
    (IMAGES / "corrupt.png").write_bytes(whole[: len(whole) // 2])
    notes["corrupt.png"] = f"valid 32x32 RGB noise PNG truncated to {len(whole) // 2} of {len(whole)} bytes"

    (IMAGES / "not_image.png").write_text("This is not a PNG file, just text.\n")
    notes["not_image.png"] = "plain text with a .png name"
    (IMAGES / "empty.jpg").write_bytes(b"")
    notes["empty.jpg"] = "0 bytes"

    meta = {name: {"note": note, **read_back(IMAGES / name)} for name, note in sorted(notes.items())}
    with Image.open(IMAGES / "exif_rotated.jpg") as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    top, bottom = upright[10, 10].tolist(), upright[30, 10].tolist()
    if not (top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]):
        raise SystemExit(f"exif_rotated.jpg: expected red top / blue bottom, got {top} {bottom}")
    meta["exif_rotated.jpg"]["exif_transposed_pixels"] = {"x10_y10": top, "x10_y30": bottom}
    return meta


def read_back(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"file": rel(path), "size_bytes": path.stat().st_size}
    try:
        with Image.open(path) as im:
            info.update(format=im.format, mode=im.mode, size=list(im.size))
            im.load()
            upright = ImageOps.exif_transpose(im)
            info["exif_transposed_size"] = list(upright.size)
    except Exception as exc:  # recording Pillow's failure is the point
        info["error"] = {"exception": type(exc).__name__, "message": scrub(str(exc))}
    return info


# --------------------------------------------------------------------------------------------


def main() -> int:
    t0 = time.perf_counter()
    MODELS.mkdir(parents=True, exist_ok=True)
    for old in MODELS.glob("*.tflite"):
        old.unlink()
    LABELS_FILE.write_text("".join(f"{label}\n" for label in LABELS))

    print("digits data ...")
    x_train, y_train, holdout = make_digits()
    x_hold, y_hold = holdout_inputs(holdout)

    print(f"training on {len(x_train)} images, {len(holdout)} held out ...")
    t_train = time.perf_counter()
    export_model, epochs, keras_acc = train_digits(x_train, y_train, x_hold, y_hold)
    train_seconds = time.perf_counter() - t_train

    import tensorflow as tf

    print("converting ...")
    (MODELS / "digits_float.tflite").write_bytes(convert(export_model))
    (MODELS / "digits_int8.tflite").write_bytes(convert(export_model, quantized(x_train, tf.int8)))
    uint8_skipped: str | None = None
    try:
        uint8 = convert(export_model, quantized(x_train, tf.uint8))
    except Exception as exc:  # the converter may reject uint8 I/O
        uint8_skipped = f"{type(exc).__name__}: {exc}"
        print(f"  digits_uint8 skipped: {uint8_skipped}")
    else:
        (MODELS / "digits_uint8.tflite").write_bytes(uint8)

    for name, data in shape_models().items():
        (MODELS / f"{name}.tflite").write_bytes(data)
    (MODELS / "custom_op.tflite").write_bytes(custom_op_model())
    (MODELS / "not_a_model.tflite").write_text(
        "This is not a TensorFlow Lite model.\nIt is plain text with a .tflite name.\n"
    )
    float_bytes = (MODELS / "digits_float.tflite").read_bytes()
    (MODELS / "truncated.tflite").write_bytes(float_bytes[: len(float_bytes) * 40 // 100])
    custom_loads_in_tf = full_tf_loads(MODELS / "custom_op.tflite")

    print("evaluating with tflite-runtime ...")
    digit_models = ["digits_float", "digits_int8"] + ([] if uint8_skipped else ["digits_uint8"])
    outputs = {m: run_digits(MODELS / f"{m}.tflite", x_hold) for m in digit_models}
    preds = {m: out.argmax(axis=1) for m, out in outputs.items()}
    accuracy = {m: round(float((p == y_hold).mean()), 6) for m, p in preds.items()}
    print(f"  accuracy: {accuracy}")
    if accuracy["digits_float"] < REQUIRED_ACCURACY:
        raise SystemExit(f"float accuracy {accuracy['digits_float']} < {REQUIRED_ACCURACY}")

    # sample_<d>.png: the first held-out image of each digit that every digits model gets right
    # and the float model is sure of, so tests on them survive small numeric differences.
    float_probs = softmax(outputs["digits_float"])
    all_right = np.all([p == y_hold for p in preds.values()], axis=0)
    samples: dict[str, Any] = {}
    for digit in range(10):
        candidates = np.flatnonzero((y_hold == digit) & all_right)
        sure = candidates[float_probs[candidates].max(axis=1) >= SAMPLE_MIN_PROBABILITY]
        n = int(sure[0] if len(sure) else candidates[float_probs[candidates].max(axis=1).argmax()])
        name = f"sample_{digit}.png"
        shutil.copyfile(DIGITS / holdout[n][0], DIGITS / name)
        samples[name] = {
            "file": rel(DIGITS / name),
            "copied_from": rel(DIGITS / holdout[n][0]),
            "label": digit,
            "label_name": LABELS[digit],
            "float_logits": [round(float(v), 4) for v in outputs["digits_float"][n]],
            "float_top_probability": round(float(float_probs[n].max()), 4),
            "quantized_outputs": {
                m: [int(v) for v in outputs[m][n]] for m in digit_models if m != "digits_float"
            },
        }

    models_meta = {
        m.stem: describe(m)
        for m in sorted(MODELS.glob("*.tflite"))
        if m.stem not in {"custom_op", "not_a_model", "truncated"}
    }
    refusals = {
        stem: refusal(MODELS / f"{stem}.tflite") for stem in ("not_a_model", "truncated", "custom_op")
    }
    refusals["custom_op"]["note"] = (
        "MatrixDeterminant converted with SELECT_TF_OPS -> Flex custom op; "
        f"loads and runs with full TensorFlow's interpreter: {custom_loads_in_tf}"
    )
    refusals["truncated"]["note"] = (
        "first 40% of the bytes of digits_float.tflite. tflite-runtime does not verify the "
        "flatbuffer: with model_path this crashes the process rather than raising, so load it "
        "only in a child process (the exact outcome depends on the bytes and may change whenever "
        "the model is regenerated)"
    )

    import PIL
    import sklearn
    import tflite_runtime

    meta = {
        "generator": "tools/make_fixtures.py",
        "versions": {
            "tensorflow": tf.__version__,
            "tflite_runtime": tflite_runtime.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "scikit_learn": sklearn.__version__,
        },
        "digits": {
            "labels_file": rel(LABELS_FILE),
            "holdout_csv": rel(DIGITS / "holdout.csv"),
            "holdout_count": len(holdout),
            "train_count": len(x_train),
            "split": "sklearn load_digits, train_test_split(test_size=0.2, stratify=target, random_state=0)",
            "image": "8x8 x*255/16 rounded half up -> uint8, 4x NEAREST -> 32x32 'L' PNG",
            "preprocessing": "Image.open, convert('L'), resize((16, 16), BILINEAR), "
            "float32, (x - 0) / 255 -> [1,16,16,1]",
            "quantized_input": "round(x / scale + zero_point), clipped to the dtype range",
            "output": "logits (no softmax); prediction = argmax of the raw output tensor",
            "epochs": epochs,
            "keras_holdout_accuracy": round(keras_acc, 6),
            "accuracy": accuracy,
            "uint8_skipped": uint8_skipped,
            "samples": samples,
        },
        "models": models_meta,
        "refusals": refusals,
        "images": make_images(),
    }
    (MODELS / "fixtures.json").write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")

    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    print(f"training {train_seconds:.1f}s, total {time.perf_counter() - t0:.1f}s")
    print(f"tests/fixtures: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
