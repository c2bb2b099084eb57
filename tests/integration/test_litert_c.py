"""The default targets' interpreter: LiteRT through its C API (runtime/litert.py), no NumPy in the
binary. Real builds, run as a user runs them; answers against the in-process reference of the same
interpreter and against the x86_64-tflite target's binary (tflite-runtime), which computes the same
model."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebundle.target import load_target
from edgebundle.toolchains.venv import HostVenv
from tests.conftest import DIGITS, IMAGES, MODELS, ROOT
from tests.integration.conftest import (
    Built,
    assert_outputs_equal,
    binary_outputs,
    build,
    edgebundle,
    reference_outputs,
    run_binary,
)

pytestmark = pytest.mark.build

SAMPLES = [DIGITS / f"sample_{d}.png" for d in range(10)] + [
    IMAGES / n for n in ("rgb.jpg", "exif_rotated.jpg", "palette.png", "rgba.png", "gray16.png")
]


def run_runtime_source(code: str, model: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``code`` in the x86_64 build environment's Python, with this checkout's runtime importable as
    ``ebrt`` (``litert`` imported) and ``model`` holding the model's bytes; it must exit 0."""
    runtime = tmp_path / "rt"
    shutil.copytree(
        ROOT / "edgebundle" / "runtime", runtime / "ebrt", ignore=shutil.ignore_patterns("__pycache__")
    )
    prelude = (
        "import sys; sys.path.insert(0, sys.argv[1]); from ebrt import litert\n"
        "model = open(sys.argv[2], 'rb').read()\n"
    )
    python = HostVenv(load_target("x86_64"), "pyinstaller").python
    return subprocess.run(
        [python, "-c", prelude + code, str(runtime), str(model)], capture_output=True, text=True, check=True
    )


@pytest.fixture(scope="module")
def lean(digits_float: Built) -> Built:
    """The default target's binary (x86_64: LiteRT's C API)."""
    assert digits_float.manifest["interpreter"]["name"] == "litert"
    return digits_float


@pytest.fixture(scope="module")
def lean_int8(digits_int8: Built) -> Built:
    return digits_int8


@pytest.fixture(scope="module")
def tflite(out_dir: Path) -> Built:
    """The same model for the x86_64-tflite target (tflite-runtime's Python API, NumPy inside)."""
    return build(out_dir, "digits_float.tflite", "digits", "--target", "x86_64-tflite", name="digits_tflite")


@pytest.mark.parametrize("name", ["x86_64-lean", "host"])
def test_the_lean_name_and_host_build_the_same(name: str, lean: Built, out_dir: Path) -> None:
    """The lean target's old name and ``host`` are the x86_64 target: the same binary, byte for byte."""
    again = build(out_dir, "digits_float.tflite", "digits", "--target", name, name=f"digits_{name}")
    assert again.path.read_bytes() == lean.path.read_bytes()


def test_the_manifest_names_the_c_api_and_no_numpy(lean: Built, tflite: Built, tmp_path: Path) -> None:
    m = lean.manifest
    assert m["model"]["ops"] == tflite.manifest["model"]["ops"]  # the file's, as the Python APIs
    assert (m["interpreter"]["name"], m["interpreter"]["module"]) == ("litert", "ebrt.litert")
    assert m["numpy"] == ""
    assert sorted(m["distributions"]) == ["ai-edge-litert", "pillow"]
    version = run_binary(lean.path, "--version", cwd=tmp_path)
    assert version.returncode == 0
    assert "litert 2.1.6" in version.stdout
    assert "no NumPy" in version.stdout


def test_the_runner_carries_the_library_and_no_numpy(lean: Built, tmp_path: Path) -> None:
    assert run_binary(lean.path, "--self-test", cwd=tmp_path).returncode == 0
    (runner,) = [p for p in (tmp_path / "home" / ".cache" / "edgebundle" / "run").iterdir() if p.is_dir()]
    internal = runner / "_internal"
    assert (internal / "ai_edge_litert" / "libLiteRt.so").is_file()
    assert sorted(p.name for p in (internal / "ai_edge_litert").iterdir()) == ["libLiteRt.so"]
    assert not list(runner.rglob("numpy*")), "NumPy in a binary of the litert interpreter"
    assert not list(runner.rglob("*tflite_runtime*"))


def test_pillow_has_the_jpeg_and_zlib_codecs_only(lean: Built, tmp_path: Path) -> None:
    """Pillow built from source (edgebundle/pins.toml): libjpeg and zlib, not the wheel's libtiff,
    OpenJPEG, liblzma or xcb. A TIFF that needs libtiff is one line saying what the binary reads; an
    uncompressed TIFF needs no library and is read."""
    assert run_binary(lean.path, "--self-test", cwd=tmp_path).returncode == 0
    (runner,) = [p for p in (tmp_path / "home" / ".cache" / "edgebundle" / "run").iterdir() if p.is_dir()]
    names = {p.name for p in runner.rglob("*.so*")}
    assert not {n for n in names if n.startswith(("libtiff", "libopenjp2", "liblzma", "libxcb", "libXau"))}
    assert {n for n in names if n.startswith("libjpeg")}
    from PIL import Image

    with Image.open(DIGITS / "sample_4.png") as png:
        png.save(tmp_path / "deflate.tif", compression="tiff_adobe_deflate")
        png.save(tmp_path / "raw.tif")
    proc = run_binary(lean.path, str(tmp_path / "deflate.tif"), str(tmp_path / "raw.tif"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"digits_float: error: {tmp_path / 'deflate.tif'}: decoder libtiff not available: this binary "
        "decodes JPEG, PNG, BMP, GIF, PPM and uncompressed TIFF (the -tflite targets' binaries decode more)\n"
    )
    assert json.loads(proc.stdout)["top_k"][0]["label"] == "four"


def test_the_formats_it_reads_and_the_others_in_one_line(lean: Built, tflite: Built, tmp_path: Path) -> None:
    """The default binary reads preprocess.DECODES (a JPEG with EXIF too: TIFF's plugin parses it); the
    plugins of other formats are left out (pyinstaller.LEAN_EXCLUDES), so such a file is one line,
    exit 2, the other images still answered. The x86_64-tflite binary, which keeps them, reads them
    (and GIF: no binary did before Pillow's ImageMath was kept, which the GIF plugin imports)."""
    from PIL import Image

    with Image.open(DIGITS / "sample_4.png") as png:
        rgb = png.convert("RGB")
    read = [tmp_path / f"four.{ext}" for ext in ("jpg", "png", "bmp", "gif", "ppm", "tif")]
    others = [tmp_path / f"four.{ext}" for ext in ("tga", "pcx", "sgi")]
    for path in read + others:
        rgb.save(path)
    proc = run_binary(lean.path, *map(str, read + others), cwd=tmp_path)
    assert proc.returncode == 2
    assert [json.loads(line)["top_k"][0]["label"] for line in proc.stdout.splitlines()] == ["four"] * 6
    assert proc.stderr.splitlines() == [
        f"digits_float: error: {path}: cannot identify image file (not an image, or a format this "
        "binary does not read)"
        for path in others
    ]
    exif = run_binary(lean.path, str(IMAGES / "exif_rotated.jpg"), cwd=tmp_path)
    assert exif.returncode == 0, exif.stderr
    proc = run_binary(tflite.path, *map(str, [*others, tmp_path / "four.gif"]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["top_k"][0]["label"] for line in proc.stdout.splitlines()] == ["four"] * 4


def test_it_runs_in_utf8_mode_whatever_the_locale(lean: Built, tmp_path: Path) -> None:
    """The binary carries no codec for KOI8-R (pyinstaller.CODECS): in that locale it runs in Python's
    UTF-8 mode all the same, opens a file by its name's bytes and answers in UTF-8 (a name that is not
    UTF-8 comes back as surrogate escapes, as os.fsdecode gives it: the same bytes)."""
    if not (shutil.which("localedef") and Path("/usr/share/i18n/locales/ru_RU").is_file()):
        assert not os.environ.get("CI"), "localedef and locale sources: apt-get install locales"
        pytest.skip("needs localedef and Debian's locales package")
    locales = tmp_path / "locales"
    locales.mkdir()
    # exit 1 for its warnings about the charmap; the check below tells whether the locale works
    subprocess.run(
        ["localedef", "-c", "-i", "ru_RU", "-f", "KOI8-R", str(locales / "ru_RU.KOI8-R")],
        check=False,
        capture_output=True,
    )
    env = {"LOCPATH": str(locales), "LC_ALL": "ru_RU.KOI8-R"}
    codeset = "import locale; locale.setlocale(locale.LC_ALL, ''); print(locale.nl_langinfo(locale.CODESET))"
    shown = subprocess.run(
        [sys.executable, "-c", codeset], env={**os.environ, **env}, capture_output=True, check=True
    )
    assert shown.stdout.strip() == b"KOI8-R", "the test locale is not in effect"
    koi8 = os.fsencode(tmp_path) + "/пример.png".encode("koi8_r")
    utf8 = tmp_path / "пример-utf8.png"
    shutil.copyfile(DIGITS / "sample_7.png", koi8)
    shutil.copyfile(DIGITS / "sample_7.png", utf8)
    proc = subprocess.run(
        [lean.path, koi8, utf8], capture_output=True, env={**env, "HOME": str(tmp_path)}, check=False
    )
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [os.fsencode(a["image"]) for a in answers] == [koi8, os.fsencode(utf8)]
    assert answers[1]["image"] == str(utf8)
    assert {a["top_k"][0]["label"] for a in answers} == {"seven"}


@pytest.mark.parametrize("which", ["lean", "lean_int8"])
def test_outputs_equal_the_in_process_reference(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    built: Built = request.getfixturevalue(which)
    for image in SAMPLES[:4]:
        work = tmp_path / image.stem
        work.mkdir()
        assert_outputs_equal(binary_outputs(built, image, work), reference_outputs(built, image, work))


def test_answers_equal_tflite_runtimes(lean: Built, tflite: Built, tmp_path: Path) -> None:
    """Same model, the tflite-runtime binary: the same labels, and scores within float rounding."""
    args = [str(p) for p in SAMPLES]
    got = run_binary(lean.path, *args, cwd=tmp_path)
    want = run_binary(tflite.path, *args, cwd=tmp_path)
    assert got.returncode == want.returncode == 0, got.stderr + want.stderr
    assert got.stderr == want.stderr == ""
    for g, w in zip(got.stdout.splitlines(), want.stdout.splitlines(), strict=True):
        a, b = json.loads(g), json.loads(w)
        assert [t["label"] for t in a["top_k"]] == [t["label"] for t in b["top_k"]]
        for x, y in zip(a["top_k"], b["top_k"], strict=True):
            assert x["score"] == pytest.approx(y["score"], abs=2e-6)
    for image in SAMPLES[:3]:
        work = tmp_path / f"raw-{image.stem}"
        work.mkdir()
        assert_outputs_equal(binary_outputs(lean, image, work), binary_outputs(tflite, image, work))


def test_batch_raw_inputs_and_errors(lean: Built, tmp_path: Path) -> None:
    raw = tmp_path / "x.npy"
    np.save(raw, np.full((1, 16, 16, 1), 0.5, dtype=np.float32))
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((1, 16, 16, 1), dtype=np.float64))
    requests = [{"path": str(DIGITS / "sample_3.png")}, {"path": str(raw)}, {"path": str(wrong)}]
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    proc = run_binary(lean.path, "--batch", cwd=tmp_path, stdin=lines)
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 2  # a bad input; the others answered
    assert out[0]["top_k"][0]["label"] == "three"
    assert "top_k" in out[1]
    assert "wants float32[1, 16, 16, 1], got float64" in out[2]["message"]
    corrupt = run_binary(lean.path, str(IMAGES / "corrupt.png"), str(DIGITS / "sample_7.png"), cwd=tmp_path)
    assert corrupt.returncode == 2
    assert corrupt.stderr.count("\n") == 1
    assert "corrupt.png" in corrupt.stderr
    assert json.loads(corrupt.stdout)["top_k"][0]["label"] == "seven"


def test_save_outputs_is_the_npy_numpy_writes(lean: Built, tmp_path: Path) -> None:
    out = tmp_path / "o.npz"
    proc = run_binary(lean.path, "--save-outputs", str(out), str(DIGITS / "sample_5.png"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        (key,) = data.files
        value = data[key]
    assert (value.dtype, value.shape) == (np.float32, (1, 10))
    assert int(value.argmax()) == 5
    # byte for byte what np.save writes for that array (header, padding, data)
    import io
    import zipfile

    buf = io.BytesIO()
    np.save(buf, value)
    with zipfile.ZipFile(out) as zf:
        assert zf.read(f"{key}.npy") == buf.getvalue()


def test_an_op_litert_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    """Named, as with the Python APIs."""
    out = tmp_path / "out"
    proc = edgebundle(
        "build",
        str(MODELS / "custom_op.tflite"),
        "--recipe",
        "digits",
        "-o",
        str(out),
    )
    assert proc.returncode == 4, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edgebundle: error: ")
    assert "FlexMatrixDeterminant" in last, last
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_broken_model_in_a_binary_is_exit_3(lean: Built, tmp_path: Path) -> None:
    """The model bytes inside the binary replaced by garbage of the same size (the digest check is what
    catches it first: exit 1 for --self-test, 3 when the interpreter refuses the bytes)."""
    data = bytearray(lean.path.read_bytes())
    model = lean.model.read_bytes()
    at = bytes(data).index(model)
    data[at : at + len(model)] = struct.pack("<I", 0) * (len(model) // 4) + bytes(len(model) % 4)
    broken = tmp_path / "broken"
    broken.write_bytes(bytes(data))
    broken.chmod(0o755)
    proc = run_binary(broken, str(DIGITS / "sample_1.png"), cwd=tmp_path)
    assert proc.returncode in (1, 3), proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_threads_run_xnnpacks_pool(lean: Built, tmp_path: Path) -> None:
    """--threads N reaches LiteRT's CPU accelerator (the options item litert.py writes itself): the
    same answer, no warning, and N - 1 worker threads once the model is compiled."""
    plain = run_binary(lean.path, str(DIGITS / "sample_2.png"), cwd=tmp_path)
    proc = run_binary(lean.path, "--threads", "2", str(DIGITS / "sample_2.png"), cwd=tmp_path)
    assert proc.returncode == plain.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout)["top_k"] == json.loads(plain.stdout)["top_k"]
    out = run_runtime_source(
        "import os\n"
        "counts = []\n"
        "for n in (1, 2):\n"
        "    before = len(os.listdir('/proc/self/task'))\n"
        "    it = litert.Interpreter(model_content=model, num_threads=n)\n"
        "    counts.append(len(os.listdir('/proc/self/task')) - before)\n"
        "    del it\n"
        "print(counts)",
        lean.model,
        tmp_path,
    )
    assert out.stdout.strip() == "[0, 1]", out.stdout + out.stderr


def test_only_the_cpu_accelerator_is_registered(lean: Built, tmp_path: Path) -> None:
    """The environment asks LiteRT for its CPU accelerator alone: no GPU, NPU or WebNN library is
    looked for (by default LiteRT dlopens four GPU libraries by bare name at every start, searching
    the device's library directories, and would load one found there). LiteRT's own INFO log, which
    the runtime hides in a binary, says what it registers."""
    out = run_runtime_source(
        "it = litert.Interpreter(model_content=model)\nprint('loaded')", lean.model, tmp_path
    )
    assert out.stdout.strip() == "loaded"
    assert "CPU accelerator registered" in out.stderr
    assert "Attempting to load GPU accelerator" not in out.stderr, out.stderr
    assert "NPU accelerator" not in out.stderr, out.stderr
    # ... and the binary says nothing on stderr either
    proc = run_binary(lean.path, "--self-test", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")
