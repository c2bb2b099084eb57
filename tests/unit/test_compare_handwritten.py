"""benchmarks/compare.py's hand-written plain script (benchmarks/handwritten.py) and its robust
reference (issue 18): the script, run as a user runs it, gives the runtime's answer for the self-test
image (float, quantized, NCHW, BGR, several outputs); a different answer is caught; every ratio is
to the lower of the two plain scripts in each round, and results with one plain script keep theirs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from tests.conftest import MODELS

pytest.importorskip("tflite_runtime")

from benchmarks import handwritten
from edgebundle.runtime.buildtime import selftest_image
from edgebundle.runtime.geometry import image_geometry
from edgebundle.runtime.model import load_interpreter, named_outputs, run, signature
from edgebundle.runtime.npz import write_npz
from edgebundle.runtime.postprocess import summarize
from edgebundle.runtime.preprocess import load, open_image, to_tensor

CLASSIFIER = {"decoder": "classification", "softmax": True, "top_k": 3, "dequantize": True, "tensor": None}
RAW = {"decoder": "raw", "softmax": False, "top_k": None, "dequantize": True, "tensor": None}
CASES = {
    "float, gray": ("digits_float.tflite", "L", 0.0, 255.0, CLASSIFIER),
    "int8 in and out": ("digits_int8.tflite", "L", 0.0, 255.0, CLASSIFIER),
    "uint8": ("digits_uint8.tflite", "L", 0.0, 255.0, {**CLASSIFIER, "softmax": False}),
    "NCHW, BGR, per channel": ("nchw.tflite", "BGR", [10.0, 20.0, 30.0], [50.0, 60.0, 70.0], RAW),
    "two outputs": ("multi_out.tflite", "RGB", 127.5, 127.5, RAW),
    "classifier on a named output": (
        "multi_out.tflite",
        "RGB",
        127.5,
        127.5,
        {**CLASSIFIER, "tensor": "StatefulPartitionedCall:1"},
    ),
}


def manifest_for(model: Path, color: str, mean: Any, std: Any, output: dict[str, Any]) -> dict[str, Any]:
    sig = signature(load_interpreter("tflite_runtime.interpreter", str(model)))
    channels = 1 if color == "L" else 3
    as_list = [float(mean)] * channels if not isinstance(mean, list) else mean
    return {
        "interpreter": {"module": "tflite_runtime.interpreter"},
        "model": {"file": "model.tflite", **sig},
        "recipe": {
            "input": {
                "tensor": sig["inputs"][0]["name"],
                "color": color,
                "resize": "stretch",
                "interpolation": "bilinear",
                "mean": as_list,
                "std": [float(std)] * channels if not isinstance(std, list) else std,
                "layout": None,
                "pad_value": 0.0,
            },
            "output": output,
        },
        "selftest": {"image": "selftest.png"},
    }


def runtime_answer(model: Path, manifest: dict[str, Any], image: Path) -> tuple[dict[str, Any], bytes]:
    """What the binary answers for ``image`` and the raw outputs it saves (--save-outputs)."""
    interpreter = load_interpreter("tflite_runtime.interpreter", str(model))
    sig = signature(interpreter)
    spec, tensor = manifest["recipe"]["input"], sig["inputs"][0]
    feeds = {tensor["index"]: to_tensor(load(open_image(str(image), None, spec, tensor)), spec, tensor)}
    values = run(interpreter, feeds)
    saved = io.BytesIO()
    write_npz(saved, named_outputs(sig["outputs"], values))  # what --save-outputs writes
    return summarize(values, sig["outputs"], manifest["recipe"]["output"], None), saved.getvalue()


def write_case(tmp_path: Path, case: str) -> tuple[dict[str, Any], Path]:
    name, color, mean, std, output = CASES[case]
    manifest = manifest_for(MODELS / name, color, mean, std, output)
    (tmp_path / "model.tflite").write_bytes((MODELS / name).read_bytes())
    geo = image_geometry(manifest["model"]["inputs"][0]["shape"], None)
    Image.fromarray(selftest_image(geo.width, geo.height), "RGB").save(tmp_path / "selftest.png")
    (tmp_path / "script.py").write_text(handwritten.script(manifest))
    (tmp_path / "bench.py").write_text(handwritten.script(manifest, bench=True))
    return manifest, tmp_path / "selftest.png"


def run_script(tmp_path: Path, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


@pytest.mark.parametrize("case", CASES)
def test_the_script_gives_the_runtimes_answer(tmp_path: Path, case: str) -> None:
    manifest, image = write_case(tmp_path, case)
    script = (tmp_path / "script.py").read_text()
    assert "argparse" not in script
    assert "manifest" not in script
    assert "ebrt" not in script
    assert "edgebundle" not in script
    answer = handwritten.parse(run_script(tmp_path, "script.py", image.name))
    binary, saved = runtime_answer(tmp_path / "model.tflite", manifest, image)
    assert handwritten.disagreement(manifest, answer, binary, saved) is None
    if handwritten.is_classifier(manifest):
        assert len(answer["top_k"]) == 5
    bench = [json.loads(line) for line in run_script(tmp_path, "bench.py", image.name, "4").splitlines()]
    assert [b["event"] for b in bench] == ["inference"] * 4
    assert all(b["ms"] >= 0 for b in bench)


def test_another_answer_is_caught(tmp_path: Path) -> None:
    manifest, image = write_case(tmp_path, "float, gray")
    answer = handwritten.parse(run_script(tmp_path, "script.py", image.name))
    binary, saved = runtime_answer(tmp_path / "model.tflite", manifest, image)
    wrong = {"top_k": [{"index": (binary["top_k"][0]["index"] + 1) % 10}]}
    assert "top-1" in (handwritten.disagreement(manifest, answer, wrong, saved) or "")

    manifest, image = write_case(tmp_path, "two outputs")
    answer = handwritten.parse(run_script(tmp_path, "script.py", image.name))
    binary, saved = runtime_answer(tmp_path / "model.tflite", manifest, image)
    answer["outputs"][0]["first"][0] += 0.5
    assert "first values" in (handwritten.disagreement(manifest, answer, binary, saved) or "")


def test_several_inputs_are_not_covered() -> None:
    manifest = manifest_for(MODELS / "digits_float.tflite", "L", 0.0, 255.0, CLASSIFIER)
    manifest["model"]["inputs"].append(manifest["model"]["inputs"][0])
    with pytest.raises(handwritten.Unsupported, match="2 inputs"):
        handwritten.script(manifest)


def sample(warm: float, cold: float, rss: int, latency: float) -> dict[str, Any]:
    return {"warm_ms": warm, "cold_ms": cold, "peak_rss_bytes": rss, "latency_ms": latency}


def test_ratios_are_to_the_faster_plain_script_of_each_round(compare: ModuleType) -> None:
    plain = compare.Variant("m", "runtime as script", "plain")
    hand = compare.Variant("m", "hand-written script", "handwritten")
    ours = compare.Variant("m", "edgebundle x86_64", "edgebundle", size_bytes=1)
    plain.samples = [sample(130, 200, 50, 1.0), sample(120, 200, 50, 1.0), sample(140, 210, 50, 1.0)]
    hand.samples = [sample(100, 250, 40, 1.1), sample(125, 150, 45, 0.9), sample(110, 220, 40, 1.0)]
    ours.samples = [sample(110, 300, 30, 1.0), sample(120, 300, 30, 1.0), sample(121, 300, 30, 1.0)]
    variants = [plain, hand, ours]
    s = compare.summary(ours, compare.references(ours, variants))
    assert s["ratio"]["warm_ms"] == pytest.approx(1.1)  # 110/100, 120/120, 121/110
    assert s["ratio"]["cold_ms"] == pytest.approx(300 / 200)  # 300/200, 300/150, 300/210
    assert s["ratio"]["peak_rss_bytes"] == pytest.approx(0.75)  # against the smaller: 40, 45, 40
    assert s["reference"]["warm_ms"] == ["hand-written script", "runtime as script", "hand-written script"]
    assert compare.summary(plain, compare.references(plain, variants))["ratio"]["warm_ms"] > 1
    notes = compare.reference_notes(variants)
    assert notes == [
        "- reference (m, tflite-runtime), rounds it was the lower: warm: hand-written script 2/3 + "
        "runtime as script 1/3; cold: runtime as script 2/3 + hand-written script 1/3; RSS: "
        "hand-written script 3/3; latency: runtime as script 2/3 + hand-written script 1/3"
    ]
    table = compare.table(variants, {"m": 0})
    assert "warm / faster plain" in table
    assert "RSS / smaller plain" in table
    assert any("warm start <= 1.0x the faster plain script" in g for g in compare.goals(variants, {"m": 0}))

    # results with one plain script (before the hand-written one): ratios to it, as they were
    old = [plain, ours]
    s = compare.summary(ours, compare.references(ours, old))
    assert s["ratio"]["warm_ms"] == pytest.approx(121 / 140)  # 110/130, 120/120, 121/140
    assert "reference" not in s
    assert "warm / plain" in compare.table(old, {"m": 0})
    assert compare.reference_notes(old) == []
    assert any(
        g.endswith("warm start <= 1.0x plain (m, edgebundle x86_64)") for g in compare.goals(old, {"m": 0})
    )
