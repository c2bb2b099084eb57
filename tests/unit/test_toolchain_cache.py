"""Cached environments: created once under a lock, an interrupted creation never used; binfmt
registration; the ``toolchain`` commands on a cache made of plain directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgebundle.cli import main
from edgebundle.errors import ConfigError, ToolMissingError
from edgebundle.target import load_target
from edgebundle.toolchains import (
    COMPLETE,
    create_cached,
    is_complete,
    mounts_under,
    no_wheel_error,
    partial_path,
    read_metadata,
)
from edgebundle.toolchains.binfmt import ensure_registered, entry_name, entry_state, registration_line
from edgebundle.toolchains.roots import list_roots, remove_roots

DEBIAN_CONF = (
    "# comment\n"
    ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
    "\\x02\\x00\\xb7\\x00:\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OCF\n"
)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEBUNDLE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _noop(_line: str) -> None:
    pass


# --- create_cached -----------------------------------------------------------------------------


def test_created_once_then_reused(tmp_path: Path) -> None:
    calls = []

    def make(tmp: Path, log: Path) -> None:
        calls.append(tmp)
        tmp.mkdir()
        (tmp / "content").write_text("x")
        log.write_text("made\n")

    target = tmp_path / "envs" / "thing-abc"
    create_cached(target, echo=_noop, what="thing", make=make, metadata={"kind": "test"})
    create_cached(target, echo=_noop, what="thing", make=make, metadata={"kind": "test"})
    assert calls == [partial_path(target)]
    assert is_complete(target)
    assert (target / "content").read_text() == "x"
    assert read_metadata(target) == {"kind": "test"}
    assert not partial_path(target).exists()


def test_an_interrupted_creation_is_deleted_and_redone(tmp_path: Path) -> None:
    target = tmp_path / "roots" / "arm64-abc"
    leftover = partial_path(target)
    leftover.mkdir(parents=True)
    (leftover / "half-written").write_text("")
    seen = []

    def make(tmp: Path, log: Path) -> None:
        seen.append(sorted(p.name for p in tmp.iterdir()) if tmp.exists() else None)
        tmp.mkdir()

    lines: list[str] = []
    create_cached(target, echo=lines.append, what="root", make=make, metadata={})
    assert seen == [None]  # never built on top of the half-made one
    assert any("interrupted" in line for line in lines)
    assert is_complete(target)


def test_a_failed_creation_leaves_nothing_usable(tmp_path: Path) -> None:
    target = tmp_path / "roots" / "arm64-abc"

    def make(tmp: Path, log: Path) -> None:
        tmp.mkdir()
        raise ToolMissingError("mmdebstrap: not found")

    with pytest.raises(ToolMissingError):
        create_cached(target, echo=_noop, what="root", make=make, metadata={})
    assert not target.exists()
    assert not partial_path(target).exists()


def test_mounts_under_reads_mountinfo() -> None:
    mountinfo = (
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        "90 22 0:5 / /c/roots/.a-1.partial/rootfs/proc rw - proc proc rw\n"
        "91 22 0:6 / /c/roots/a-10/rootfs/dev rw - devtmpfs udev rw\n"
        "92 22 0:7 / /c/roots/a\\0401/x rw - tmpfs tmp rw\n"
    )
    assert mounts_under(Path("/c/roots/.a-1.partial"), mountinfo) == ["/c/roots/.a-1.partial/rootfs/proc"]
    assert mounts_under(Path("/c/roots/a-1"), mountinfo) == []
    assert mounts_under(Path("/c/roots/a 1"), mountinfo) == ["/c/roots/a 1/x"]


def test_no_wheel_becomes_a_config_error_naming_arch_and_python() -> None:
    target = load_target("arm64")
    error = no_wheel_error(
        target,
        "aarch64",
        "pip install failed with exit code 1: "
        "ERROR: No matching distribution found for ai-edge-litert==2.1.6",
    )
    assert isinstance(error, ConfigError)
    message = str(error)
    assert "ai-edge-litert==2.1.6 has no binary wheel for aarch64 and Python 3.11" in message
    assert "--interpreter" in message
    assert no_wheel_error(target, "aarch64", "ERROR: network unreachable") is None


# --- binfmt ------------------------------------------------------------------------------------


def test_registration_line_and_entry_name() -> None:
    line = registration_line(DEBIAN_CONF)
    assert line is not None
    assert line.startswith(":qemu-aarch64:M::")
    assert entry_name(line, "aarch64") == "qemu-aarch64"
    assert registration_line("# only comments\n\n") is None


def _binfmt(tmp_path: Path, entry: str | None) -> tuple[Path, tuple[Path, ...]]:
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "register").write_text("")
    if entry is not None:
        (binfmt / "qemu-aarch64").write_text(
            f"{entry}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
        )
    conf_dir = tmp_path / "binfmt.d"
    conf_dir.mkdir()
    (conf_dir / "qemu-aarch64.conf").write_text(DEBIAN_CONF)
    return binfmt, (conf_dir,)


def test_registered_handler_needs_nothing(tmp_path: Path) -> None:
    binfmt, confs = _binfmt(tmp_path, "enabled")
    assert entry_state("aarch64", binfmt) == "enabled"
    ensure_registered("aarch64", _noop, binfmt_dir=binfmt, conf_dirs=confs, euid=1000)


def test_missing_handler_without_root_says_exactly_what_to_run(tmp_path: Path) -> None:
    binfmt, confs = _binfmt(tmp_path, None)
    with pytest.raises(ToolMissingError) as info:
        ensure_registered("aarch64", _noop, binfmt_dir=binfmt, conf_dirs=confs, euid=1000)
    message = str(info.value)
    assert "\n" not in message
    assert "needs root; run: sudo sh -c" in message
    assert f"grep -v '^#' {confs[0] / 'qemu-aarch64.conf'} | head -n 1 > {binfmt}/register" in message


def test_missing_handler_as_root_is_registered(tmp_path: Path) -> None:
    binfmt, confs = _binfmt(tmp_path, None)
    with pytest.raises(ToolMissingError, match="still not enabled"):
        # A plain directory is not binfmt_misc: the line is written, but no entry appears.
        ensure_registered("aarch64", _noop, binfmt_dir=binfmt, conf_dirs=confs, euid=0)
    assert (binfmt / "register").read_text() == registration_line(DEBIAN_CONF) + "\n"


def test_no_qemu_installed(tmp_path: Path) -> None:
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    with pytest.raises(ToolMissingError, match="apt-get install qemu-user-static"):
        ensure_registered("aarch64", _noop, binfmt_dir=binfmt, conf_dirs=(tmp_path / "none",), euid=0)


# --- the toolchain commands ---------------------------------------------------------------------


def _fake_root(cache: Path, name: str, *, complete: bool, target: str = "arm64") -> Path:
    path = cache / "roots" / name
    (path / "rootfs" / "etc").mkdir(parents=True)
    (path / "rootfs" / "etc" / "os-release").write_text("x" * 5000)
    if complete:
        (path / COMPLETE).write_text(json.dumps({"target": target, "backend": "pyinstaller"}))
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_toolchain_list_and_remove(cache: Path) -> None:
    from edgebundle.buildenv import current_root_names

    current = next(n for n in current_root_names() if n.startswith("arm64-"))
    _fake_root(cache, current, complete=True)
    _fake_root(cache, "arm64-000000000000", complete=True)
    _fake_root(cache, f".{current}.partial", complete=False)
    _fake_root(cache, "x86_64-111111111111", complete=True, target="x86_64")

    states = {(r.name, r.state) for r in list_roots(current_root_names())}
    assert states == {
        (current, "ready"),
        ("arm64-000000000000", "stale"),
        (current, "interrupted"),
        ("x86_64-111111111111", "stale"),
    }
    code, out, _ = invoke("toolchain", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert {r["state"] for r in listed} == {"ready", "stale", "interrupted"}
    assert all(r["size_bytes"] > 0 for r in listed)

    code, _, err = invoke("toolchain", "remove", "aarch64")  # a synonym names the same target
    assert code == 0, err
    assert sorted(p.name for p in (cache / "roots").iterdir() if not p.name.endswith(".lock")) == [
        "x86_64-111111111111"
    ]
    assert remove_roots("arm64", _noop) == []


def test_toolchain_help() -> None:
    for command in (["toolchain"], ["toolchain", "install"], ["toolchain", "list"], ["toolchain", "remove"]):
        code, out, _ = invoke(*command, "--help")
        assert code == 0
        assert "Usage:" in out
    code, out, _ = invoke("build", "--help")
    assert "--isolated" in out


def test_toolchain_install_unknown_target() -> None:
    code, _, err = invoke("toolchain", "install", "riscv")
    assert code == 3
    assert "unknown target 'riscv'" in err.strip().splitlines()[-1]


def test_creating_a_root_without_root_says_exactly_what_to_run(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgebundle.buildenv import debian_root

    monkeypatch.setattr("edgebundle.toolchains.debroot.host_arch", lambda: "aarch64")  # native: no binfmt
    monkeypatch.setattr("edgebundle.toolchains.debroot.shutil.which", lambda tool: f"/usr/bin/{tool}")
    root = debian_root(load_target("arm64"), "pyinstaller")
    root.privileged = False
    with pytest.raises(ToolMissingError) as info:
        root.ensure(_noop)
    message = str(info.value)
    assert "\n" not in message
    assert "creating the arm64 build root needs root (mmdebstrap --mode=root); run: sudo env" in message
    assert f"EDGEBUNDLE_CACHE_DIR={cache}" in message
    assert message.endswith("toolchain install arm64 --backend pyinstaller")
    assert not (cache / "roots").exists() or not any((cache / "roots").iterdir())


def test_missing_mmdebstrap_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgebundle.buildenv import debian_root

    monkeypatch.setattr("edgebundle.toolchains.debroot.host_arch", lambda: "aarch64")
    monkeypatch.setattr("edgebundle.toolchains.debroot.shutil.which", lambda tool: None)
    with pytest.raises(
        ToolMissingError, match=r"mmdebstrap: not found; .*apt-get install mmdebstrap arch-test"
    ):
        debian_root(load_target("arm64"), "pyinstaller").ensure(_noop)


def test_toolchain_install_unknown_backend() -> None:
    code, _, err = invoke("toolchain", "install", "arm64", "--backend", "go")
    assert code == 3
    assert "--backend: unknown backend 'go'" in err.strip().splitlines()[-1]
