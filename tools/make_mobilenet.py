"""Generate the benchmark's models, with seeded random weights (nothing is downloaded):

* ``mobilenet_v2``: Keras MobileNetV2 1.0/224, ImageNet-shaped (1000 classes), float32: ~14 MB, the
  size of a real MobileNetV2 classifier and the same ops (recipe ``imagenet-mobilenet``);
* ``face``: a face-detector-sized float32 model (~230 KB): 128x128 RGB in, depthwise-separable blocks
  like BlazeFace's, per-anchor scores and boxes out (recipe benchmarks/face.toml).

Random weights change the outputs, not the work: timing, size and memory are what a trained model of
the same architecture costs. Dev-only (TensorFlow; see tools/requirements-fixtures.txt), run by
benchmarks/compare.py, which caches the result::

    /work/fixture-venv/bin/python tools/make_mobilenet.py mobilenet_v2 OUT.tflite
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"

SEED = 0
# Channels of the face model's separable blocks (a stride-2 block where the channels grow), chosen
# for ~57k parameters: BlazeFace's short-range model's 230 KB of float weights.
FACE_BLOCKS = (24, 24, 32, 32, 48, 48, 64, 64, 64, 96, 96, 96)


def mobilenet_v2(tf: Any) -> Any:
    model = tf.keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000, classifier_activation=None
    )
    # Batch-norm statistics of a batch of random images, as training leaves them, so that activations
    # keep their scale from layer to layer. With the initial ones (mean 0, variance 1) they shrink at
    # every block: the logits came out ~1e-11, every class 0.001 after softmax, and the top-1 a tie that
    # runtimes broke differently (benchmarks/compare.py then refused to compare the hand-written script).
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(tf.random.uniform((16, 224, 224, 3), -1.0, 1.0, seed=SEED), training=True)
    return model


def face(tf: Any) -> Any:
    layers = tf.keras.layers
    image = layers.Input((128, 128, 3), name="image")
    x = layers.Conv2D(FACE_BLOCKS[0], 5, strides=2, padding="same", activation="relu")(image)
    channels = FACE_BLOCKS[0]
    for width in FACE_BLOCKS[1:]:
        stride = 2 if width > channels else 1
        y = layers.DepthwiseConv2D(3, strides=stride, padding="same")(x)
        y = layers.Conv2D(width, 1, padding="same")(y)
        if stride == 2:
            x = layers.MaxPooling2D(2)(x)
        if width > channels:
            x = layers.Concatenate()([x, layers.Conv2D(width - channels, 1)(x)])
        x = layers.ReLU()(layers.Add()([x, y]))
        channels = width
    anchors = 2
    scores = layers.Conv2D(anchors, 1, name="scores")(x)
    boxes = layers.Conv2D(anchors * 4, 1, name="boxes")(x)
    return tf.keras.Model(image, [scores, boxes])


MODELS = {"mobilenet_v2": mobilenet_v2, "face": face}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()

    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    model = MODELS[args.model](tf)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    data = converter.convert()
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(args.out)
    print(f"{args.out}: {args.model}, {model.count_params()} parameters, {len(data)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
