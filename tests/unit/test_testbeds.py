"""scripts/testbeds.py without root: the apt sources it gives mmdebstrap, --bind parsing, the static
ELF check, the host command of ``run`` and the cache's make-once-then-rename. (Making and running
in real beds: tests/integration/test_anylinux.py.)"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

from edgebundle.toolchains.aptsources import select_sources
from tests.conftest import load_testbeds

testbeds = load_testbeds()

HOST_LIST = """\
deb http://mirror.example/debian bookworm main contrib
deb http://mirror.example/debian bookworm-updates main
deb [signed-by=/k.gpg] http://security.example/debian-security bookworm-security main
deb http://mirror.example/debian bookworm-backports main
"""


def test_bullseye_comes_from_the_hosts_debian_mirror_release_only() -> None:
    host = select_sources([("sources.list", HOST_LIST)], "bookworm")
    assert host is not None
    sources = testbeds.main_suite_sources(host, "bookworm", "bullseye")
    assert (
        sources
        == "Types: deb\nSuites: bullseye\nURIs: http://mirror.example/debian\nComponents: main contrib\n"
    )


def test_no_sources_for_the_hosts_codename_gives_none() -> None:
    host = select_sources([("sources.list", HOST_LIST)], "bookworm-security")
    assert host is not None
    assert testbeds.main_suite_sources(host, "bookworm", "bullseye") is None


@pytest.mark.parametrize(
    ("text", "codename"),
    [
        ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n', "bookworm"),
        ("ID=ubuntu\nVERSION_CODENAME=noble\nID_LIKE=debian\n", None),
        ("ID=debian\n", None),
    ],
)
def test_host_codename_is_debians_only(tmp_path: Path, text: str, codename: str | None) -> None:
    (tmp_path / "os-release").write_text(text)
    assert testbeds.host_codename(tmp_path / "os-release") == codename


def test_bind_specs(tmp_path: Path) -> None:
    parse = testbeds.Bind.parse
    assert parse(f"{tmp_path}:/app") == testbeds.Bind(host=str(tmp_path), inside="/app")
    assert parse(f"{tmp_path}:/app:ro") == testbeds.Bind(host=str(tmp_path), inside="/app", read_only=True)
    assert parse(str(tmp_path)) == testbeds.Bind(host=str(tmp_path), inside=str(tmp_path))
    for bad in (f"{tmp_path}:app", f"{tmp_path}:/a:/b:/c", ":/app"):
        with pytest.raises(testbeds.BedError):
            parse(bad)


def _elf(tmp_path: Path, program_headers: list[int]) -> Path:
    """A 64-bit little-endian ELF header followed by program headers of the given types."""
    header = b"\x7fELF\x02\x01\x01" + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0, 64, 56, len(program_headers), 64, 0, 0)
    phdrs = b"".join(struct.pack("<II", t, 0) + bytes(48) for t in program_headers)
    path = tmp_path / "elf"
    path.write_bytes(header + phdrs)
    return path


def test_static_elf_has_no_program_interpreter(tmp_path: Path) -> None:
    assert testbeds.is_static_elf(_elf(tmp_path, [1, 1, 4]))  # PT_LOAD, PT_LOAD, PT_NOTE
    assert not testbeds.is_static_elf(_elf(tmp_path, [6, 3, 1]))  # PT_PHDR, PT_INTERP, PT_LOAD
    assert not testbeds.is_static_elf(Path(sys.executable).resolve())
    (tmp_path / "script").write_text("#!/bin/sh\n")
    with pytest.raises(testbeds.BedError):
        testbeds.is_static_elf(tmp_path / "script")


def test_run_argv_is_the_command_itself_in_a_mount_namespace(tmp_path: Path) -> None:
    binds = [testbeds.Bind(host="/srv/data", inside="/data", read_only=True)]
    argv = testbeds.run_argv(
        tmp_path / "rootfs",
        ["/app/x", "--self-test"],
        binds=binds,
        env={"HOME": "/h"},
        cwd="/w",
        cache=tmp_path,
    )
    assert Path(argv[0]).name == "unshare"
    assert argv[1:5] == ["--mount", "--propagation", "private", "--"]
    assert "--fork" not in argv  # the command is the process started: its exit status and signals
    script_args = argv[argv.index("testbed-run") + 1 :]
    assert script_args[:3] == [str((tmp_path / "rootfs").resolve()), str(tmp_path / ".mnt"), "/w"]
    assert script_args[3:7] == ["ro", "/srv/data", "/data", "--"]
    # for env -i; QEMU_CPU for an arm64 bed's emulator (edgebundle/toolchains/binfmt.py)
    assert script_args[7:10] == ["HOME=/h", f"PATH={testbeds.DEFAULT_PATH}", f"QEMU_CPU={testbeds.QEMU_CPU}"]
    tool, *chroot = script_args[10:]
    assert Path(tool).name == "unshare"  # no namespace: --root and --wd only, no shell needed inside
    assert chroot == [f"--root={tmp_path / '.mnt'}/root", "--wd=/w", "--", "/app/x", "--self-test"]
    assert (tmp_path / ".mnt").is_dir()


def test_a_bed_is_made_once_in_a_temporary_directory_then_renamed(tmp_path: Path) -> None:
    bed = testbeds.Bed(kind="bare", arch="amd64", cache=tmp_path)
    (tmp_path / ".bare-amd64.tmp-1").mkdir()  # left by a killed process
    calls = []

    def make(tmp: Path) -> dict[str, object]:
        calls.append(tmp)
        assert not bed.path.exists()
        (tmp / "rootfs" / "bin").mkdir(parents=True)
        return {"from": "test"}

    assert testbeds.create(bed, make) == bed.rootfs
    assert testbeds.create(bed, make) == bed.rootfs
    assert len(calls) == 1
    assert calls[0].name.startswith(".bare-amd64.tmp-")
    info = bed.info()
    assert info is not None
    assert info.pop("seconds") >= 0
    assert info == {"layout": testbeds.LAYOUT, "kind": "bare", "arch": "amd64", "from": "test"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bare-amd64.lock", "bare-amd64"]


def test_a_failed_make_leaves_nothing(tmp_path: Path) -> None:
    bed = testbeds.Bed(kind="bullseye", arch="arm64", cache=tmp_path)

    def make(tmp: Path) -> dict[str, object]:
        (tmp / "rootfs").mkdir()
        raise testbeds.BedError("mmdebstrap failed")

    with pytest.raises(testbeds.BedError, match="mmdebstrap failed"):
        testbeds.create(bed, make)
    assert [p.name for p in tmp_path.iterdir()] == [".bullseye-arm64.lock"]
    assert bed.info() is None


def test_a_gateway_is_bookworm_with_systemd_and_sshd(tmp_path: Path) -> None:
    argv = testbeds.gateway_mmdebstrap_argv("arm64", tmp_path / "rootfs", tmp_path / "apt.sources")
    assert "bookworm" in argv
    assert "bullseye" not in argv
    assert "--include=systemd,systemd-sysv,openssh-server,dbus,procps" in argv
    assert "--arch=arm64" in argv
    assert not any("python" in a or "curl" in a for a in argv)


def test_gateway_names_and_their_state(tmp_path: Path) -> None:
    for bad in ("", "Up", "a/b", "-x", "x" * 40):
        with pytest.raises(testbeds.BedError):
            testbeds.gateway_down(bad, tmp_path)
    assert testbeds.gateway_down("gw-1", tmp_path) is False  # nothing up: nothing to stop
    gw = testbeds.Gateway(name="gw-1", cache=tmp_path)
    gw.path.mkdir(parents=True)
    gw.info_path.write_text('{"name": "gw-1", "pid": 1, "ssh_port": 2222}')
    assert testbeds.gateway_list(tmp_path) == [{"name": "gw-1", "pid": 1, "ssh_port": 2222, "running": False}]
    assert testbeds.gateway_down("gw-1", tmp_path) is False  # pid 1 is not its systemd-nspawn
    assert not gw.path.exists()


def test_the_beds_emulate_the_cpu_the_builder_does() -> None:
    """scripts/testbeds.py runs without edgebundle importable: its QEMU_CPU is a copy of the builder's."""
    from edgebundle.toolchains.binfmt import QEMU_CPU

    if os.environ.get("QEMU_CPU"):
        pytest.skip("QEMU_CPU is set here: both take it")
    assert testbeds.QEMU_CPU == QEMU_CPU
