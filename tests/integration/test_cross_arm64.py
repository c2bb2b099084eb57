"""arm64 from this x86_64 host: the digits models built with ``--target arm64`` (LiteRT's C API) in
the emulated Debian root, run under QEMU, and compared with the x86_64 in-process reference of the
same interpreter (floats within 1e-5, int8 exactly). The second build must reuse the cached root.
``--target arm64-tflite`` (tflite-runtime, Debian's NumPy) is built and compared too, in a root of
its own.

Needs root (to create the root with mmdebstrap), mmdebstrap and qemu-user-static with binfmt_misc:
scripts/setup.sh and scripts/ci-services.sh install them. Under CI=true a missing piece fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgebundle.buildenv import debian_root
from edgebundle.target import host_arch, load_target
from edgebundle.toolchains import is_complete
from edgebundle.toolchains.binfmt import qemu_cpu_env, registered
from edgebundle.toolchains.debroot import DebRoot
from tests.conftest import DIGITS, IMAGES, MODELS, in_ci
from tests.integration.conftest import (
    Built,
    assert_outputs_equal,
    edgebundle,
    reference_outputs,
    run_binary,
    runner_moved_aside,
    sha256,
)

pytestmark = [pytest.mark.cross, pytest.mark.build]

SAMPLES = [DIGITS / "sample_3.png", DIGITS / "sample_7.png", IMAGES / "rgb.jpg"]
EM_AARCH64 = 183


@dataclass(frozen=True)
class CrossBuild:
    built: Built
    stderr: str
    seconds: float
    root_created: bool


def _missing() -> str | None:
    if host_arch() != "x86_64":
        return "cross-building arm64 is tested from an x86_64 host"
    root = debian_root(load_target("arm64"), "pyinstaller")
    if not root.exists():
        if os.geteuid() != 0:
            return "creating the arm64 build root needs root"
        for tool in ("mmdebstrap", "arch-test"):
            if shutil.which(tool) is None:
                return f"{tool} not installed (bash scripts/setup.sh as root installs it)"
    if not registered("aarch64") and os.geteuid() != 0:
        return "qemu-aarch64 is not registered with binfmt_misc (bash scripts/ci-services.sh as root)"
    return None


@pytest.fixture(scope="session")
def arm64_root() -> DebRoot:
    reason = _missing()
    if reason is not None:
        if in_ci():
            pytest.fail(f"arm64 cross tests cannot run: {reason}")
        pytest.skip(reason)
    return debian_root(load_target("arm64"), "pyinstaller")


def _run_arm64(root: DebRoot, binary: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """conftest.run_binary for an arm64 binary: through binfmt_misc, with its libraries from the
    build root (QEMU looks there first), on the CPU edgebundle has QEMU emulate (max without SME:
    with SME, QEMU 7.2 computes LiteRT's int8 kernels wrong, toolchains/binfmt.py)."""
    env = {"QEMU_LD_PREFIX": str(root.rootfs), **qemu_cpu_env()}
    return run_binary(binary, *args, cwd=cwd, env=env)


def _cross_build(root: DebRoot, out_dir: Path, model: str, target: str = "arm64") -> CrossBuild:
    out = out_dir / (Path(model).stem + ("" if target == "arm64" else f"-{target}"))
    created_before = root.exists()
    start = time.monotonic()
    proc = edgebundle("build", str(MODELS / model), "--recipe", "digits", "--target", target, "-o", str(out))
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith(f"built {out}: ")
    info = _run_arm64(root, out, "--info", cwd=out_dir)
    assert info.returncode == 0, info.stderr
    built = Built(path=out, model=MODELS / model, manifest=json.loads(info.stdout))
    print(f"\n{target} build of {model}: {seconds:.0f} s, {out.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    return CrossBuild(built=built, stderr=proc.stderr, seconds=seconds, root_created=not created_before)


@pytest.fixture(scope="session")
def cross_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("arm64")


@pytest.fixture(scope="session")
def arm64_float(arm64_root: DebRoot, cross_dir: Path) -> CrossBuild:
    return _cross_build(arm64_root, cross_dir, "digits_float.tflite")


@pytest.fixture(scope="session")
def arm64_int8(arm64_root: DebRoot, cross_dir: Path, arm64_float: CrossBuild) -> CrossBuild:
    # Built after the float one on purpose: this is the build that must reuse the cached root.
    complete = arm64_root.path / ".complete"
    before = complete.stat().st_mtime_ns
    build = _cross_build(arm64_root, cross_dir, "digits_int8.tflite")
    assert complete.stat().st_mtime_ns == before
    return build


@pytest.fixture(scope="session")
def arm64_tflite(arm64_root: DebRoot, cross_dir: Path) -> tuple[DebRoot, CrossBuild]:
    """The same model for arm64-tflite: tflite-runtime and Debian's NumPy, in a root of their own."""
    root = debian_root(load_target("arm64-tflite"), "pyinstaller")
    return root, _cross_build(root, cross_dir, "digits_float.tflite", "arm64-tflite")


def _elf_machine(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF"
    return head[4], int.from_bytes(head[18:20], "little")  # EI_CLASS (2 = 64-bit), e_machine


def test_builds_an_aarch64_elf_that_ran_its_self_test_under_qemu(arm64_float: CrossBuild) -> None:
    assert _elf_machine(arm64_float.built.path) == (2, EM_AARCH64)
    assert "self-test passed under QEMU" in arm64_float.stderr
    m = arm64_float.built.manifest
    assert m["target"]["name"] == "arm64"
    assert m["target"]["arch"] == "aarch64"
    assert m["python"].startswith("3.11.")
    assert m["interpreter"] == {"name": "litert", "module": "ebrt.litert", "version": "2.1.6"}
    assert m["numpy"] == ""


# Issue 6: at most 12 MB plus the model. LiteRT's C API: ~8.7 MB, no NumPy. tflite-runtime with
# Debian's NumPy in the root (reference BLAS instead of the wheel's OpenBLAS) and numpy.linalg's
# LAPACK left out: ~9 MB; the wheel made it 12.9 MB.
MAX_BYTES_WITHOUT_MODEL = 12_000_000


def _libraries(built: Built) -> set[str]:
    proc = edgebundle("inspect", str(built.path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["size_bytes"] <= MAX_BYTES_WITHOUT_MODEL + built.model.stat().st_size
    return {Path(lib["path"]).name for lib in report["libraries"]}


def test_arm64_binary_carries_litert_and_no_numpy(arm64_float: CrossBuild) -> None:
    names = _libraries(arm64_float.built)
    assert "libLiteRt.so" in names
    assert not {n for n in names if "numpy" in n or n.startswith(("_multiarray", "libblas", "libopenblas"))}
    # Pillow built in the root as on the host: JPEG and zlib, not the wheel's libtiff and the rest
    assert {n for n in names if n.startswith("libjpeg")}
    assert not {n for n in names if n.startswith(("libtiff", "libopenjp2", "liblzma", "libxcb"))}


def test_arm64_tflite_binary_has_numpy_from_debian_without_openblas_or_lapack(
    arm64_tflite: tuple[DebRoot, CrossBuild], tmp_path: Path
) -> None:
    root, build = arm64_tflite
    assert "self-test passed under QEMU" in build.stderr
    (debian,) = root.from_debian
    assert build.built.manifest["numpy"] == debian.version
    assert build.built.manifest["interpreter"]["version"] == "2.14.0"
    names = _libraries(build.built)
    assert "libblas.so.3" in names  # Debian's reference BLAS, 0.4 MB
    assert not {n for n in names if n.startswith(("libopenblas", "liblapack", "libgfortran"))}
    assert not {n for n in names if n.startswith(("_umath_linalg", "lapack_lite"))}
    image = SAMPLES[0]
    assert_outputs_equal(
        _outputs(root, build.built, image, tmp_path), reference_outputs(build.built, image, tmp_path)
    )


def test_second_build_reuses_the_cached_root(arm64_root: DebRoot, arm64_int8: CrossBuild) -> None:
    assert not arm64_int8.root_created
    assert "creating the emulated" not in arm64_int8.stderr
    assert "mmdebstrap" not in arm64_int8.stderr
    assert is_complete(arm64_root.path)
    assert _elf_machine(arm64_int8.built.path) == (2, EM_AARCH64)


def _outputs(root: DebRoot, built: Built, image: Path, work: Path) -> dict[str, np.ndarray[Any, Any]]:
    out = work / "arm64.npz"
    proc = _run_arm64(root, built.path, "--save-outputs", str(out), str(image), cwd=work)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("image", SAMPLES, ids=lambda p: p.name)
def test_float_outputs_under_qemu_equal_x86_64_reference(
    arm64_root: DebRoot, arm64_float: CrossBuild, image: Path, tmp_path: Path
) -> None:
    assert_outputs_equal(
        _outputs(arm64_root, arm64_float.built, image, tmp_path),
        reference_outputs(arm64_float.built, image, tmp_path),
    )


@pytest.mark.parametrize("image", SAMPLES, ids=lambda p: p.name)
def test_int8_outputs_under_qemu_equal_x86_64_reference_exactly(
    arm64_root: DebRoot, arm64_int8: CrossBuild, image: Path, tmp_path: Path
) -> None:
    got = _outputs(arm64_root, arm64_int8.built, image, tmp_path)
    assert next(iter(got.values())).dtype.name == "int8"
    assert_outputs_equal(got, reference_outputs(arm64_int8.built, image, tmp_path))


def test_arm64_rebuild_from_nothing_is_byte_identical_and_inspectable(
    arm64_root: DebRoot, arm64_float: CrossBuild, tmp_path: Path
) -> None:
    """Reproducible under QEMU too: the arm64 runner moved aside, built again in the root."""
    with runner_moved_aside(arm64_float.built.path) as runners:
        again = _cross_build(arm64_root, tmp_path, "digits_float.tflite")
        assert any((path / "runner.json").is_file() for path in runners)
        assert sha256(again.built.path) == sha256(arm64_float.built.path)
    proc = edgebundle("inspect", str(arm64_float.built.path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["arch"] == "aarch64"
    assert report["model_sha256_matches_manifest"] is True
    assert report["glibc_floor"] is not None
    assert tuple(map(int, report["glibc_floor"].split("."))) <= (2, 36)
    # bookworm's arm64 glibc, carried: its ABI tag says Linux >= 3.7 (aarch64's floor)
    assert report["libc"] == {"mode": "bundled", "glibc": "2.36", "kernel_floor": "3.7.0"}


@pytest.mark.device
def test_device_qemu_finds_the_build_root_of_the_binary_by_itself(
    arm64_root: DebRoot, arm64_float: CrossBuild, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "QEMU_LD_PREFIX"}
    binary = str(arm64_float.built.path)
    proc = subprocess.run(
        [sys.executable, "-m", "edgebundle", "test", binary, "--device", "qemu", "--runs", "2", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"QEMU_LD_PREFIX={arm64_root.rootfs} (the build root that made digits_float)" in proc.stderr
    report = json.loads(proc.stdout)
    assert (report["device"], report["arch"], report["emulated"]) == ("qemu", "aarch64", True)
