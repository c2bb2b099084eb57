"""Real Nuitka builds: the same binary interface, and outputs equal to the PyInstaller build of the same
model and recipe. The Nuitka runner compiles for minutes once; every build here after the first only
appends a payload to it (edgebundle/backends/runners.py caches it by its inputs)."""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import DIGITS, FIXTURES, IMAGES
from tests.integration.conftest import (
    CLEAN_ENV,
    Built,
    assert_outputs_equal,
    binary_outputs,
    build,
    fixture_recipe,
    reference_outputs,
    run_binary,
    runner_moved_aside,
    sha256,
)

pytestmark = [pytest.mark.build, pytest.mark.nuitka]

# exif_rotated.jpg: reading EXIF imports Pillow's TIFF plugin, which imports modules of the standard
# library that the runtime itself never imports (see nuitka.UNUSED_STDLIB).
SAMPLES = [DIGITS / f"sample_{d}.png" for d in (0, 3, 7)] + [
    IMAGES / name for name in ("rgb.jpg", "exif_rotated.jpg", "palette.png", "rgba.png", "gray16.png")
]


@pytest.fixture(scope="session")
def nuitka_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nuitka")


@pytest.fixture(scope="session")
def nuitka_float(nuitka_dir: Path) -> Built:
    """The one session build that may compile the runner (minutes); the rest reuse it."""
    return build(nuitka_dir, "digits_float.tflite", "digits", "--backend", "nuitka")


@pytest.fixture(scope="session")
def nuitka_int8(nuitka_dir: Path, nuitka_float: Built) -> Built:
    return build(nuitka_dir, "digits_int8.tflite", "digits", "--backend", "nuitka")


@pytest.fixture(scope="module")
def nuitka_tflite(nuitka_dir: Path) -> Built:
    """The x86_64-tflite target (tflite-runtime's Python API, NumPy inside) with Nuitka: a runner of its
    own (minutes)."""
    return build(
        nuitka_dir,
        "digits_float.tflite",
        "digits",
        "--target",
        "x86_64-tflite",
        "--backend",
        "nuitka",
        name="digits_tflite",
    )


def test_carries_the_litert_library_and_no_numpy(nuitka_float: Built, tmp_path: Path) -> None:
    """nofollow of NumPy; libLiteRt.so where the binding looks
    (ai_edge_litert/ under the folder, a sys.path entry: our plugin's DLL entry), its libstdc++ and
    libgcc_s with the bundled C library."""
    m = nuitka_float.manifest
    assert (m["backend"], m["interpreter"]["module"], m["numpy"]) == ("nuitka", "ebrt.litert", "")
    proc = run_binary(nuitka_float.path, "--self-test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["self_test"] == "pass"
    (runner,) = [p for p in (tmp_path / "home" / ".cache" / "edgebundle" / "run").iterdir() if p.is_dir()]
    assert sorted(p.name for p in (runner / "ai_edge_litert").iterdir()) == ["libLiteRt.so"]
    assert {"libstdc++.so.6", "libgcc_s.so.1"} <= {p.name for p in (runner / "_libc").iterdir()}
    assert not list(runner.rglob("*numpy*")), "NumPy in a binary of the litert interpreter"
    program = (runner / "run").read_bytes()  # NumPy's modules compiled or as bytecode: their names
    assert not any(module in program for module in (b"numpy._core", b"numpy.core", b"numpy.lib"))


def test_answers_equal_pyinstallers(nuitka_float: Built, digits_float: Built, tmp_path: Path) -> None:
    samples = [str(DIGITS / f"sample_{d}.png") for d in range(10)]
    got = run_binary(nuitka_float.path, *samples, cwd=tmp_path)
    want = run_binary(digits_float.path, *samples, cwd=tmp_path)
    assert got.returncode == want.returncode == 0, got.stderr + want.stderr
    labels = [[t["label"] for t in json.loads(line)["top_k"]] for line in got.stdout.splitlines()]
    assert labels == [[t["label"] for t in json.loads(line)["top_k"]] for line in want.stdout.splitlines()]
    assert [top[0] for top in labels] == [
        *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    ]
    image = DIGITS / "sample_3.png"
    assert_outputs_equal(
        binary_outputs(nuitka_float, image, tmp_path), binary_outputs(digits_float, image, tmp_path)
    )


def test_detections_equal_pyinstallers(nuitka_dir: Path, tmp_path: Path) -> None:
    """The detection decoders (plain Python) compiled by Nuitka into a binary without NumPy: the same
    boxes, scores and keypoints as the PyInstaller build's (the runner is the digits one's)."""
    model, recipe = "det_ssd.tflite", fixture_recipe("det-ssd")
    nuitka = build(nuitka_dir, model, recipe, "--backend", "nuitka", name="det_ssd")
    pyinstaller = build(nuitka_dir, model, recipe, name="det_ssd_pi")
    images = [str(FIXTURES / "detection" / name) for name in ("squares.png", "wide.png", "tall_exif.png")]
    got = run_binary(nuitka.path, *images, cwd=tmp_path)
    want = run_binary(pyinstaller.path, *images, cwd=tmp_path)
    assert got.returncode == want.returncode == 0, got.stderr + want.stderr
    answers = [[json.loads(line)["detections"] for line in p.stdout.splitlines()] for p in (got, want)]
    assert answers[0] == answers[1]
    assert all(answers[0])


def test_info_names_the_backend(nuitka_float: Built) -> None:
    m = nuitka_float.manifest
    assert m["backend"] == "nuitka"
    assert m["interpreter"]["module"] == "ebrt.litert"
    assert m["labels"][7] == "seven"


def test_tflite_runtime_compiled_too(nuitka_tflite: Built, nuitka_float: Built, tmp_path: Path) -> None:
    """tflite-runtime's Python API and NumPy compiled by Nuitka: the self-test passes, the outputs equal
    tflite-runtime's in-process ones, and the answers LiteRT's within float rounding."""
    m = nuitka_tflite.manifest
    assert (m["backend"], m["interpreter"]["module"]) == ("nuitka", "tflite_runtime.interpreter")
    assert m["numpy"]
    assert run_binary(nuitka_tflite.path, "--self-test", cwd=tmp_path).returncode == 0
    for image in SAMPLES[:4]:
        work = tmp_path / image.stem
        work.mkdir()
        got = binary_outputs(nuitka_tflite, image, work)
        assert_outputs_equal(got, reference_outputs(nuitka_tflite, image, work))
        assert_outputs_equal(got, binary_outputs(nuitka_float, image, work))


def test_one_elf_that_runs_without_python(nuitka_float: Built, tmp_path: Path) -> None:
    data = nuitka_float.path.read_bytes()
    assert data[:4] == b"\x7fELF"
    proc = run_binary(nuitka_float.path, str(DIGITS / "sample_7.png"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["top_k"][0]["label"] == "seven"
    assert list((tmp_path / "run").iterdir()) == []


def test_self_test_passes(nuitka_float: Built, tmp_path: Path) -> None:
    proc = run_binary(nuitka_float.path, "--self-test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("image", SAMPLES, ids=lambda p: p.name)
def test_float_outputs_equal_pyinstaller(
    nuitka_float: Built, digits_float: Built, image: Path, tmp_path: Path
) -> None:
    assert digits_float.manifest["backend"] == "pyinstaller"
    got = binary_outputs(nuitka_float, image, tmp_path)
    assert_outputs_equal(got, binary_outputs(digits_float, image, tmp_path))


def test_int8_outputs_equal_pyinstaller_and_python(
    nuitka_int8: Built, digits_int8: Built, tmp_path: Path
) -> None:
    image = DIGITS / "sample_3.png"
    got = binary_outputs(nuitka_int8, image, tmp_path)
    assert next(iter(got.values())).dtype.name == "int8"
    assert_outputs_equal(got, binary_outputs(digits_int8, image, tmp_path))
    assert_outputs_equal(got, reference_outputs(nuitka_int8, image, tmp_path))


def test_rebuilding_the_runner_is_byte_identical(nuitka_float: Built, nuitka_dir: Path) -> None:
    """The cached runner moved aside, Nuitka compiles it again (its own caches and ccache's kept, as
    on a CI runner with a restored cache): the same binary, byte for byte. Nuitka orders what it
    generates itself and embeds no build time or path; PYTHONHASHSEED and SOURCE_DATE_EPOCH are fixed
    for every build command (toolchains.reproducible_env)."""
    with runner_moved_aside(nuitka_float.path) as runners:
        again = build(
            nuitka_dir, "digits_float.tflite", "digits", "--backend", "nuitka", name="digits_float_rebuilt"
        )
        assert any((path / "runner.json").is_file() for path in runners)  # really rebuilt
        assert sha256(again.path) == sha256(nuitka_float.path)


def test_tiff_outputs_equal_pyinstaller(nuitka_float: Built, digits_float: Built, tmp_path: Path) -> None:
    """Formats other than the fixtures' come through Pillow's plugins, with imports of their own."""
    image = tmp_path / "sample_3.tif"
    with Image.open(DIGITS / "sample_3.png") as png:
        png.save(image)
    got = binary_outputs(nuitka_float, image, tmp_path)
    assert_outputs_equal(got, binary_outputs(digits_float, image, tmp_path))


def _resident_bytes(pid: int, start: int, end: int) -> int:
    """Bytes of [start, end) mapped in process ``pid`` now (/proc/PID/pagemap: bit 63, page present)."""
    page = os.sysconf("SC_PAGE_SIZE")
    first, last = start // page, (end + page - 1) // page
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = f.read((last - first) * 8)
    return page * sum(word >> 63 for (word,) in struct.iter_unpack("<Q", entries))


def test_bytecode_blob_is_given_back_once_read(nuitka_float: Built, tmp_path: Path) -> None:
    """release_bytecode.c (nuitka_plugin/): of the bytecode section of Nuitka's constants blob (MBs of
    the standard library's and Pillow's bytecode, all of it mapped by the loader's start-up
    walk), little stays resident once the program has imported everything and run an inference."""
    home = tmp_path / "home"
    proc = subprocess.Popen(
        [str(nuitka_float.path), "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**CLEAN_ENV, "HOME": str(home)},
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps({"path": str(DIGITS / "sample_7.png")}) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["top_k"][0]["label"] == "seven"
        # The launcher execs the program: the same process, now mapping the unpacked ``run``.
        maps = Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
        program = next(Path(line.split()[-1]) for line in maps if line.endswith("/run"))
        data = program.read_bytes()
        at = data.index(b".bytecode\0") + len(b".bytecode\0")
        (size,) = struct.unpack_from("<I", data, at)
        offset = at + 4
        assert size > 2_000_000, "the section holds the standard library's bytecode at least"
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            file_offset = int(fields[2], 16)
            if fields[-1] == str(program) and file_offset <= offset < file_offset + high - low:
                start = low + offset - file_offset
                break
        else:
            pytest.fail(f"the bytecode section at offset {offset} of {program} is not mapped")
        resident = _resident_bytes(proc.pid, start, start + size)
        # Without the release, all of it (the start-up walk plus the kernel's 64 kB fault-around).
        assert resident < 512 * 1024, f"{resident} of {size} bytes of bytecode still resident"
    finally:
        proc.kill()
        proc.wait()


def test_inspect_is_patched_when_imported_not_at_start(nuitka_float: Built, tmp_path: Path) -> None:
    """defer_inspect.c (nuitka_plugin/): the image modes never import inspect (Nuitka's own start-up
    did, to patch it); --serve imports it with asyncio, the patch runs right after (the plugin's
    inspect-postLoad code), and the server answers a real request. Nuitka's programs honour
    PYTHONVERBOSE: the imports are on stderr."""
    verbose = {"PYTHONVERBOSE": "1"}
    proc = run_binary(nuitka_float.path, "--self-test", cwd=tmp_path, env=verbose)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "import 'PIL'" in proc.stderr  # it does say what it imports
    assert "import 'inspect'" not in proc.stderr

    serve = subprocess.Popen(
        [str(nuitka_float.path), "--serve", "--port", "0", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**CLEAN_ENV, "HOME": str(tmp_path / "home"), **verbose},
    )
    lines: list[str] = []
    try:
        assert serve.stderr is not None
        deadline = time.monotonic() + 60
        while not any('"event":"ready"' in line for line in lines[-3:]):
            assert time.monotonic() < deadline, "no ready line within 60 s:\n" + "".join(lines[-20:])
            ready, _, _ = select.select([serve.stderr], [], [], 1.0)
            if ready:
                line = serve.stderr.readline()
                assert line, "--serve exited:\n" + "".join(lines[-20:])
                lines.append(line)
        # and it serves: asyncio's coroutines (compiled ones among them) with the patched inspect
        (listening,) = (json.loads(line) for line in lines if '"event":"listening"' in line)
        request = urllib.request.Request(
            f"http://127.0.0.1:{listening['port']}/v1/infer",
            data=(DIGITS / "sample_7.png").read_bytes(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["top_k"][0]["label"] == "seven"
    finally:
        serve.kill()
        serve.wait()
    imported = lines.index("import 'inspect' # <class 'nuitka_module_loader'>\n")
    assert "Loaded inspect-postLoad\n" in lines[:imported]  # Nuitka logs the import once it returns


def test_runs_in_a_root_with_no_c_library(nuitka_float: Built, tmp_path: Path) -> None:
    """Like the PyInstaller binaries (tests/integration/test_anylinux.py): a root holding only a static
    busybox, no libc, no loader; the Nuitka runner carries its glibc and the libstdc++/libgcc_s/zlib
    that Nuitka leaves to the system."""
    from edgebundle.target import host_arch
    from tests.conftest import FIXTURES, in_ci, load_testbeds

    testbeds = load_testbeds()
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("the test beds need root")
        pytest.skip("the test beds need root")
    bare = testbeds.ensure("bare", {"x86_64": "amd64", "aarch64": "arm64"}[host_arch()])
    home = tmp_path / "home"
    home.mkdir()
    binds = [
        testbeds.Bind(
            host=str(nuitka_float.path.parent), inside=str(nuitka_float.path.parent), read_only=True
        ),
        testbeds.Bind(host=str(FIXTURES), inside=str(FIXTURES), read_only=True),
        testbeds.Bind(host=str(home), inside=str(home)),
    ]
    for args, expect in ((["--self-test"], "self_test"), ([str(DIGITS / "sample_7.png")], "top_k")):
        proc = subprocess.run(
            testbeds.run_argv(
                bare, [str(nuitka_float.path), *args], binds=binds, env={"HOME": str(home)}, cwd=str(home)
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert expect in json.loads(proc.stdout)
    assert json.loads(proc.stdout)["top_k"][0]["label"] == "seven"
