"""A built binary on devices that are not the build machine: the digits model built for x86_64 and
arm64, each run in the test beds of scripts/testbeds.py:

- ``bullseye``: Debian 11 minbase, glibc 2.31, older than the 2.36 of the bookworm roots binaries are
  built in;
- ``bare``: a static busybox and nothing else: no C library, no dynamic loader, no /etc.

By default a binary brings its own C library (a static launcher; a glibc and its ld.so for the
runner), so in every bed it must pass its self-test, give the in-process reference's outputs, answer
``--batch`` as on the host and serve HTTP to the host on ``--host localhost`` (the bare bed has no
/etc/hosts to say what localhost is). A ``--system-libc`` binary needs the device's glibc >= 2.36:
in the bullseye bed it fails saying which glibc version is missing, in the bare bed the kernel finds
no loader. ``edgebundle inspect`` says which kind each binary is.

Each binary is built once and each bed made once per session (the beds are cached across sessions:
~30 s for amd64, ~90 s for arm64 under QEMU the first time). Every run has a HOME of its own (one
per binary and bed), bound into the bed, where the first start unpacks the runtime.

Needs root (mmdebstrap, mount namespaces), mmdebstrap, and for arm64 an x86_64 host with qemu-aarch64
registered with binfmt_misc: scripts/setup.sh and scripts/ci-services.sh provide them. Under CI=true
a missing piece fails.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgebundle.target import host_arch
from tests.conftest import DIGITS, FIXTURES, IMAGES, MODELS, in_ci, load_testbeds
from tests.integration.conftest import CLEAN_ENV, Built, assert_outputs_equal, edgebundle, reference_outputs

pytestmark = pytest.mark.build

RUN_TIMEOUT_S = 300.0  # the first start of an arm64 binary unpacks its runtime under QEMU
SEVEN = DIGITS / "sample_7.png"
THREE = DIGITS / "sample_3.png"
DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
CASES = [
    pytest.param(arch, kind, id=f"{arch}-{kind}", marks=[pytest.mark.cross] if arch == "arm64" else [])
    for arch in ("x86_64", "arm64")
    for kind in ("bullseye", "bare")
]


testbeds = load_testbeds()


def _missing(arch: str) -> str | None:
    if os.geteuid() != 0:
        return "the test beds need root (mmdebstrap, mount namespaces, chroot)"
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (bash scripts/setup.sh as root installs it)"
    if arch == "arm64":
        if host_arch() != "x86_64":
            return "the arm64 beds are tested from an x86_64 host"
        if shutil.which("arch-test") is None:
            return "arch-test not installed (bash scripts/setup.sh as root installs it)"
        if not testbeds.binfmt_enabled("arm64"):
            return "qemu-aarch64 is not registered with binfmt_misc (bash scripts/ci-services.sh as root)"
    return None


def _require(arch: str) -> None:
    reason = _missing(arch)
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"the {arch} test beds cannot run: {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class Binary:
    built: Built
    arch: str
    inspect_text: str
    inspect: dict[str, Any]


@dataclass(frozen=True)
class Bed:
    kind: str
    arch: str
    rootfs: Path

    def argv(self, binary: Binary, *args: str, work: Path, home: Path) -> list[str]:
        """The host command running ``binary`` in this bed from ``work``, with ``home`` as HOME:
        the three, and the fixtures, bound at their own paths (so every path means the same inside)."""
        binds = [
            testbeds.Bind(
                host=str(binary.built.path.parent), inside=str(binary.built.path.parent), read_only=True
            ),
            testbeds.Bind(host=str(FIXTURES), inside=str(FIXTURES), read_only=True),
            testbeds.Bind(host=str(work), inside=str(work)),
            testbeds.Bind(host=str(home), inside=str(home)),
        ]
        return list(
            testbeds.run_argv(
                self.rootfs,
                [str(binary.built.path), *args],
                binds=binds,
                env={**CLEAN_ENV, "HOME": str(home)},
                cwd=str(work),
            )
        )


@pytest.fixture(scope="session")
def beds() -> Callable[[str, str], Bed]:
    made: dict[tuple[str, str], Bed] = {}

    def bed(arch: str, kind: str) -> Bed:
        _require(arch)
        if (arch, kind) not in made:
            started = time.monotonic()
            rootfs = testbeds.ensure(kind, DEBIAN_ARCH[arch])
            print(f"\n{kind}-{arch} bed: {time.monotonic() - started:.1f} s", file=sys.stderr)
            made[arch, kind] = Bed(kind=kind, arch=arch, rootfs=rootfs)
        return made[arch, kind]

    return bed


def _build(out_dir: Path, arch: str, *extra: str) -> Binary:
    name = "-".join(["digits", arch, *(e.lstrip("-") for e in extra)])
    out = out_dir / name
    started = time.monotonic()
    target = ["--target", arch] if arch != "x86_64" else []
    proc = edgebundle(
        "build", str(MODELS / "digits_float.tflite"), "--recipe", "digits", *target, *extra, "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith(f"built {out}: ")
    print(f"\n{name}: built in {time.monotonic() - started:.1f} s", file=sys.stderr)
    text = edgebundle("inspect", str(out))
    assert text.returncode == 0, text.stderr
    report = edgebundle("inspect", str(out), "--json")
    assert report.returncode == 0, report.stderr
    inspected = json.loads(report.stdout)
    built = Built(path=out, model=MODELS / "digits_float.tflite", manifest=inspected["manifest"])
    return Binary(built=built, arch=arch, inspect_text=text.stdout, inspect=inspected)


@pytest.fixture(scope="session")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Binary]:
    """``binaries(arch)``: the digits model built for ``arch`` (once); ``system_libc=True``: with
    ``--system-libc``."""
    out_dir = tmp_path_factory.mktemp("anylinux")
    built: dict[tuple[str, bool], Binary | str] = {}

    def binary(arch: str, *, system_libc: bool = False) -> Binary:
        _require(arch)
        key = (arch, system_libc)
        if key not in built:
            try:
                built[key] = _build(out_dir, arch, *(["--system-libc"] if system_libc else []))
            except AssertionError as err:
                built[key] = str(err).splitlines()[0]  # an arm64 build fails in minutes: only once
                raise
        found = built[key]
        if isinstance(found, str):
            pytest.fail(f"the {arch} build failed earlier in this session: {found}")
        return found

    return binary


@pytest.fixture(scope="session")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Binary, Bed], Path]:
    """One HOME per binary and bed: the first run of a binary in a bed unpacks its runtime there."""
    made: dict[tuple[Path, Path], Path] = {}

    def home(binary: Binary, bed: Bed) -> Path:
        key = (binary.built.path, bed.rootfs)
        if key not in made:
            made[key] = tmp_path_factory.mktemp(f"home-{binary.built.path.name}-{bed.kind}")
        return made[key]

    return home


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_in(homes: Callable[[Binary, Bed], Path], tmp_path: Path) -> Runner:
    """``run_in(bed, binary, *args, stdin=None)``: run ``binary`` in ``bed`` from this test's
    tmp_path (bound in, read-write)."""

    def run(
        bed: Bed, binary: Binary, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            bed.argv(binary, *args, work=tmp_path, home=homes(binary, bed)),
            capture_output=True,
            text=True,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )

    return run


# --- the beds themselves (they hold whatever the binaries are) --------------------------------------


@pytest.mark.parametrize("arch", ["x86_64", pytest.param("arm64", marks=pytest.mark.cross)])
def test_bullseye_bed_has_glibc_2_31_and_no_newer(beds: Callable[[str, str], Bed], arch: str) -> None:
    bed = beds(arch, "bullseye")
    proc = subprocess.run(
        testbeds.run_argv(bed.rootfs, ["getconf", "GNU_LIBC_VERSION"]),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "glibc 2.31"
    assert testbeds.glibc_version(bed.rootfs) == "2.31"
    assert (bed.rootfs / "etc" / "hosts").is_file()


@pytest.mark.parametrize("arch", ["x86_64", pytest.param("arm64", marks=pytest.mark.cross)])
def test_bare_bed_is_a_static_busybox_and_nothing_else(beds: Callable[[str, str], Bed], arch: str) -> None:
    bed = beds(arch, "bare")
    files = sorted(str(p.relative_to(bed.rootfs)) for p in bed.rootfs.rglob("*") if not p.is_dir())
    dirs = sorted(
        str(p.relative_to(bed.rootfs)) for p in bed.rootfs.rglob("*") if p.is_dir() and not p.is_symlink()
    )
    assert files == ["bin/busybox", "bin/sh"]
    assert dirs == ["bin", "dev", "proc", "tmp"]
    assert testbeds.is_static_elf(bed.rootfs / "bin" / "busybox")
    # It runs (through QEMU for arm64), /proc is mounted, a minimal /dev is there, the exit status and
    # the command's own output pass through, and nothing of the run stays in the cached bed.
    proc = subprocess.run(
        testbeds.run_argv(
            bed.rootfs,
            [
                "/bin/sh",
                "-c",
                "uname -m; ls /; echo x >/dev/null; head -c 4 /dev/urandom | wc -c; touch /x; exit 3",
            ],
        ),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    machine, *rest = proc.stdout.split()
    assert machine == {"x86_64": "x86_64", "arm64": "aarch64"}[arch]
    assert rest == ["bin", "dev", "proc", "sys", "tmp", "4"]  # /sys mounted by the run, as on a device
    assert not (bed.rootfs / "x").exists()


# --- the binaries in the beds ---------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "kind"), CASES)
def test_self_test_passes(
    beds: Callable[[str, str], Bed], binaries: Callable[..., Binary], run_in: Runner, arch: str, kind: str
) -> None:
    bed, binary = beds(arch, kind), binaries(arch)
    proc = run_in(bed, binary, "--self-test")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["self_test"] == "pass"


def _npz(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize(("arch", "kind"), CASES)
def test_raw_outputs_equal_the_in_process_reference(
    beds: Callable[[str, str], Bed],
    binaries: Callable[..., Binary],
    run_in: Runner,
    tmp_path: Path,
    arch: str,
    kind: str,
) -> None:
    bed, binary = beds(arch, kind), binaries(arch)
    for image in (SEVEN, IMAGES / "rgb.jpg"):
        out = tmp_path / f"{image.stem}.npz"
        proc = run_in(bed, binary, "--save-outputs", str(out), str(image))
        assert proc.returncode == 0, proc.stderr[-3000:]
        want = reference_outputs(binary.built, image, tmp_path / f"ref-{image.stem}")
        assert_outputs_equal(_npz(out), want)


def _batch_input() -> str:
    requests = [
        {"path": str(SEVEN)},
        {"path": str(THREE)},
        {"image_b64": base64.b64encode(THREE.read_bytes()).decode(), "id": 3},
    ]
    return "".join(json.dumps(r) + "\n" for r in requests)


def _results(stdout: str) -> list[tuple[Any, Any, list[tuple[int, str]], list[float]]]:
    """Each result's id or image, its top-k indices and labels, and their scores."""
    out = []
    for line in stdout.splitlines():
        result = json.loads(line)
        top = [(t["index"], t["label"]) for t in result["top_k"]]
        out.append((result.get("id"), result.get("image"), top, [t["score"] for t in result["top_k"]]))
    return out


@pytest.fixture(scope="session")
def host_batch(binaries: Callable[..., Binary], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The x86_64 binary's --batch answer, run on this host."""
    binary = binaries("x86_64")
    work = tmp_path_factory.mktemp("host-batch")
    proc = subprocess.run(
        [str(binary.built.path), "--batch"],
        input=_batch_input(),
        capture_output=True,
        text=True,
        cwd=work,
        env={**CLEAN_ENV, "HOME": str(work)},
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(("arch", "kind"), CASES)
def test_batch_gives_the_labels_of_the_host(
    beds: Callable[[str, str], Bed],
    binaries: Callable[..., Binary],
    run_in: Runner,
    host_batch: str,
    arch: str,
    kind: str,
) -> None:
    bed, binary = beds(arch, kind), binaries(arch)
    proc = run_in(bed, binary, "--batch", stdin=_batch_input())
    assert proc.returncode == 0, proc.stderr[-3000:]
    got, want = _results(proc.stdout), _results(host_batch)
    assert [r[:3] for r in got] == [r[:3] for r in want]
    # arm64's kernels may differ from x86_64's in the last bits
    np.testing.assert_allclose([r[3] for r in got], [r[3] for r in want], rtol=0, atol=1e-5)
    assert [top[0][1] for _, _, top, _ in got] == ["seven", "three", "three"]


def _log_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(errors="replace")
    records = []
    for line in text[: text.rfind("\n") + 1].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line from the launcher or the loader, not the server's log
    return records


def _wait_listening(proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        for record in _log_records(log):
            if record.get("event") == "listening":
                return record
        if proc.poll() is not None:
            raise AssertionError(
                f"the server exited {proc.returncode}: {log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.1)
    raise AssertionError(
        f"no 'listening' log line in {RUN_TIMEOUT_S:.0f} s: {log.read_text(errors='replace')[-3000:]}"
    )


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.parametrize(("arch", "kind"), CASES)
def test_serve_on_localhost_answers_the_host(
    beds: Callable[[str, str], Bed],
    binaries: Callable[..., Binary],
    homes: Callable[[Binary, Bed], Path],
    tmp_path: Path,
    arch: str,
    kind: str,
) -> None:
    bed, binary = beds(arch, kind), binaries(arch)
    log = tmp_path / "serve.log"
    # --port 0: the kernel picks a free port, the "listening" log line says which (and on which
    # address "localhost" was resolved to: the host connects to the same).
    argv = bed.argv(
        binary,
        "--serve",
        "--host",
        "localhost",
        "--port",
        "0",
        "--workers",
        "1",
        work=tmp_path,
        home=homes(binary, bed),
    )
    with open(log, "wb") as stderr:
        server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        listening = _wait_listening(server, log)
        assert listening["host"] in ("127.0.0.1", "::1")
        host = f"[{listening['host']}]" if ":" in listening["host"] else listening["host"]
        base = f"http://{host}:{listening['port']}"
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (status := _get(f"{base}/readyz")[0]) != 200 and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        assert status == 200, log.read_text(errors="replace")[-3000:]
        status, body = _get(f"{base}/v1/infer", SEVEN.read_bytes())
        assert status == 200, body
        assert json.loads(body)["top_k"][0]["label"] == "seven"
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)  # the server itself: the bed's run does not fork
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert code == 0, log.read_text(errors="replace")[-3000:]


# --- the opt-out: --system-libc needs the device's glibc ------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("bullseye", r"version `GLIBC_2\.3[4-9]' not found"),
        ("bare", r"No such file or directory"),
    ],
    ids=["bullseye", "bare"],
)
def test_system_libc_binary_needs_the_devices_glibc(
    beds: Callable[[str, str], Bed], binaries: Callable[..., Binary], run_in: Runner, kind: str, message: str
) -> None:
    bed, binary = beds("x86_64", kind), binaries("x86_64", system_libc=True)
    proc = run_in(bed, binary, "--self-test")
    assert proc.returncode != 0
    assert re.search(message, proc.stderr), proc.stderr[-3000:]


def _c_library_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("C library:")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(
    ("arch", "system_libc"),
    [("x86_64", False), pytest.param("arm64", False, marks=pytest.mark.cross), ("x86_64", True)],
    ids=["x86_64", "arm64", "x86_64-system-libc"],
)
def test_inspect_says_which_c_library(binaries: Callable[..., Binary], arch: str, system_libc: bool) -> None:
    binary = binaries(arch, system_libc=system_libc)
    line = _c_library_line(binary.inspect_text)
    libc = binary.inspect["libc"]
    if system_libc:
        assert re.match(r"C library: system glibc >= 2\.36\b", line), line
        assert libc["mode"] == "system"
    else:
        assert re.match(r"C library: bundled glibc 2\.\d+ \(Linux >= \d+\.\d+(\.\d+)?\b", line), line
        assert libc["mode"] == "bundled"
