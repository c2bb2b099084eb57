"""The pipeline's judgements that need no device: the binary's arch, what a failed first run means,
and budgets read from a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebundle.device.measurement import Cold, _manifest, _manifest_budgets, _start_failure, binary_arch
from edgebundle.errors import ConfigError, DeviceError, IntegrityError
from edgebundle.inspection import check_integrity
from edgebundle.proc import Completed
from edgebundle.runtime.measure import guest_rss_kib, tree_peak_bytes
from edgebundle.target import Budgets
from tests.conftest import FIXTURES

DEVICE = FIXTURES / "device"
APP = Path("dist/digits")


def test_binary_arch_comes_from_the_elf_header() -> None:
    assert binary_arch(DEVICE / "fake_app-aarch64") == "aarch64"
    assert binary_arch(DEVICE / "fake_app-x86_64") == "x86_64"


def test_a_file_that_is_not_elf_is_not_ours() -> None:
    with pytest.raises(ConfigError, match=r"not-a-binary.sh is not an edgebundle binary \(not an ELF file\)"):
        binary_arch(DEVICE / "not-a-binary.sh")


def cold(stderr: str, exit_code: int) -> Cold:
    return Cold(ms=10.0, exit_code=exit_code, stdout="", stderr=stderr)


@pytest.mark.parametrize(
    ("stderr", "exit_code", "expected"),
    [
        (
            "aarch64-binfmt-P: Could not open '/lib/ld-linux-aarch64.so.1': No such file or directory",
            255,
            "point QEMU_LD_PREFIX at a root that has it",
        ),
        ("sh: 1: /tmp/edgebundle.x/app: Permission denied", 126, "is its temp dir on a noexec mount"),
        (
            "[PYI-123:ERROR] Failed to load Python shared library '/tmp/_MEI1/libpython3.11.so.1.0': "
            "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.36' not found",
            255,
            "needs a newer glibc than gw has",
        ),
        ("[PYI-123:ERROR] Could not create temporary directory!", 255, "cannot start on gw: [PYI-123:ERROR]"),
    ],
)
def test_a_binary_that_cannot_start_is_a_device_error(stderr: str, exit_code: int, expected: str) -> None:
    error = _start_failure(APP, "gw", cold(stderr, exit_code))
    assert isinstance(error, DeviceError)
    assert expected in str(error)
    assert "\n" not in str(error)


def test_a_program_that_merely_refuses_our_options_is_not_a_start_failure() -> None:
    assert _start_failure(APP, "gw", cold("true: unrecognized option '--self-test'", 1)) is None


def test_budgets_from_the_manifest() -> None:
    raw = {"max_size_mb": 40, "max_startup_ms": 2000.5, "max_rss_mb": None}
    assert _manifest_budgets(raw, APP) == Budgets(max_size_mb=40.0, max_startup_ms=2000.5)


@pytest.mark.parametrize("raw", [None, [], {"max_size_mb": "40"}, {"max_rss_mb": True}])
def test_bad_manifest_budgets_point_to_target(raw: object) -> None:
    with pytest.raises(ConfigError, match="--target"):
        _manifest_budgets(raw, APP)


@pytest.mark.parametrize(
    ("seen", "maxrss", "tree", "largest"),
    [
        ({1: 1000, 2: 50_000}, 50_000, 51_000, 50_000),  # polls saw everything
        ({1: 1000, 2: 30_000}, 50_000, 51_000, 50_000),  # the largest grew after its last poll
        ({}, 5000, 5000, 5000),  # a run too short for any poll
        ({1: 1000, 2: 900, 3: 800}, 1000, 2700, 1000),  # the sum, where wait4 knows only the largest
    ],
)
def test_tree_peak_adds_what_wait4_proves_the_polls_missed(
    seen: dict[int, int], maxrss: int, tree: int, largest: int
) -> None:
    assert tree_peak_bytes(seen, maxrss) == (tree * 1024, largest * 1024)


QEMU = "/usr/bin/qemu-aarch64-static"
SMAPS = """\
00400000-00c00000 r-xp 00000000 08:01 123 /usr/bin/qemu-aarch64-static
Size:               8192 kB
Rss:                8000 kB
VmFlags: rd ex mr mw me
55013b3000-5501619000 rw-p 00000000 00:00 0
Size:               2456 kB
Rss:                2036 kB
VmFlags: rd wr mr mw me ac
5501700000-5501800000 r--p 00000000 08:01 456 /cache/run/x/_internal/libpython3.11.so.1.0
Size:               1024 kB
Rss:                1000 kB
VmFlags: rd mr mw me
555588bf9000-5555890d9000 rw-p 00000000 00:00 0                          [heap]
Size:               4992 kB
Rss:                4928 kB
VmFlags: rd wr mr mw me ac
7f7c61200000-7f7c691ff000 rwxp 00000000 00:00 0
Size:             131068 kB
Rss:               26624 kB
VmFlags: rd wr ex mr mw me ac hg
7ffd00000000-7ffd00100000 r-xp 00000000 08:01 789 /path with spaces/lib.so
Size:               1024 kB
Rss:                  10 kB
VmFlags: rd ex mr mw me
"""


def test_the_guest_estimate_leaves_out_translated_code_the_emulator_and_its_heap() -> None:
    # Guest anonymous memory, the guest's file mappings (a path with spaces too) count.
    assert guest_rss_kib(SMAPS, QEMU) == 2036 + 1000 + 10


class InfoDevice:
    """A DeviceDir whose only command is ``APP --info``, answering with a fixed result."""

    def __init__(self, returncode: int, stdout: str) -> None:
        self.result = Completed(returncode=returncode, stdout=stdout, stderr="")

    def run(self, command: list[str], **kwargs: object) -> Completed:
        assert command[-1] == "--info"
        return self.result


def test_a_model_that_does_not_match_the_manifest_is_an_integrity_error() -> None:
    # what --info prints (and exits 1 with) when the model's bytes were changed
    stdout = json.dumps({"target": {"name": "x86_64"}, "model_check": {"matches_manifest": False}})
    dev = InfoDevice(1, stdout)
    with pytest.raises(IntegrityError, match=r"digits: the model's digest does not match the manifest on gw"):
        _manifest(dev, ["app"], APP, "gw", cold("app: error: the model's BLAKE2b digest ...", 1))  # type: ignore[arg-type]


def test_an_intact_manifest_is_returned() -> None:
    manifest = {"target": {"name": "x86_64"}, "model_check": {"matches_manifest": True}}
    dev = InfoDevice(0, json.dumps(manifest))
    assert _manifest(dev, ["app"], APP, "gw", cold("", 0)) == manifest  # type: ignore[arg-type]


def test_inspect_fails_on_a_model_mismatch_only() -> None:
    check_integrity({"kind": "binary", "path": "app", "model_sha256_matches_manifest": True})
    check_integrity({"kind": "model", "path": "m.tflite"})
    with pytest.raises(IntegrityError, match="app: the model's sha256 does not match the manifest"):
        check_integrity({"kind": "binary", "path": "app", "model_sha256_matches_manifest": False})


@pytest.mark.parametrize(
    ("libc", "kernel", "glibc", "refused"),
    [
        ({"mode": "bundled", "glibc": "2.36", "kernel_floor": "3.2.0"}, "6.1.0-13-amd64", "", None),
        ({"mode": "bundled", "glibc": "2.36", "kernel_floor": "3.2.0"}, "5.4.0", "2.31", None),
        (
            {"mode": "bundled", "glibc": "2.36", "kernel_floor": "3.7.0"},
            "3.4.113-sun8i",
            "",
            "needs Linux >= 3.7.0",
        ),
        ({"mode": "system", "glibc_floor": "2.34"}, "5.10.0", "2.36", None),
        ({"mode": "system", "glibc_floor": "2.34"}, "5.10.0", "2.31", "without --system-libc"),
        ({"mode": "system", "glibc_floor": "2.34"}, "5.10.0", "", None),  # unknown: the run will say
    ],
)
def test_check_libc_refuses_a_device_that_cannot_run_the_binary(
    libc: dict[str, str], kernel: str, glibc: str, refused: str | None
) -> None:
    from edgebundle.device.needs import check_libc
    from edgebundle.errors import DeviceError

    if refused is None:
        note = check_libc(libc, "app", "ssh://gw", kernel, glibc)
        assert note.startswith("C library: ")
    else:
        with pytest.raises(DeviceError, match=refused):
            check_libc(libc, "app", "ssh://gw", kernel, glibc)
