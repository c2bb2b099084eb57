"""Our FlatBuffer reader against what tflite-runtime itself reported for every fixture model."""

from __future__ import annotations

import json

import pytest

from edgebundle.tflite import TFLiteFormatError, parse_model, read_model
from tests.conftest import MODELS

RECORDED = json.loads((MODELS / "fixtures.json").read_text())["models"]


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_tensors_match_the_interpreter(name: str) -> None:
    info = read_model(MODELS / f"{name}.tflite")
    for ours, theirs in [
        *zip(info.inputs, RECORDED[name]["inputs"], strict=True),
        *zip(info.outputs, RECORDED[name]["outputs"], strict=True),
    ]:
        assert ours.name == theirs["name"]
        assert list(ours.shape) == theirs["shape"]
        assert ours.dtype == theirs["dtype"]
        q = theirs["quantization"]
        if q["scale"]:
            assert ours.scale == pytest.approx((q["scale"],))
            assert ours.zero_point == (q["zero_point"],)
        else:
            assert ours.scale == ()


def test_ops_and_versions() -> None:
    assert [op.label() for op in read_model(MODELS / "digits_int8.tflite").ops] == [
        "CONV_2D v3",
        "MAX_POOL_2D v2",
        "RESHAPE v1",
        "FULLY_CONNECTED v4",
    ]
    custom = read_model(MODELS / "custom_op.tflite")
    assert custom.custom_ops == ["FlexMatrixDeterminant"]
    assert "FlexMatrixDeterminant (custom)" in custom.to_json()["ops"]
    # written as a custom op, but registered by every interpreter: nothing a runtime must bring
    detection = read_model(MODELS / "det_postprocess.tflite")
    assert "TFLite_Detection_PostProcess (custom)" in detection.to_json()["ops"]
    assert detection.custom_ops == []


def test_not_a_model() -> None:
    with pytest.raises(TFLiteFormatError, match="no 'TFL3' flatbuffer identifier"):
        read_model(MODELS / "not_a_model.tflite")


def test_every_truncation_is_refused_or_parsed_never_crashes() -> None:
    # tflite-runtime segfaults on many of these; the reader must raise its own error instead.
    data = (MODELS / "digits_float.tflite").read_bytes()
    refused = 0
    for cut in range(0, len(data), max(1, len(data) // 400)):
        try:
            parse_model(data[:cut])
        except TFLiteFormatError:
            refused += 1
    assert refused == len(range(0, len(data), max(1, len(data) // 400)))  # every cut is refused
