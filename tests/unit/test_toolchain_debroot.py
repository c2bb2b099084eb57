"""The pure parts of the Debian build roots: command lines as data, cache keys, apt sources and the
pip configuration carried into a root."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from edgebundle.buildenv import debian_root, for_plan
from edgebundle.errors import BuildError, ConfigError
from edgebundle.plan import BuildPlan, make_plan
from edgebundle.recipe import load_recipe
from edgebundle.target import DebianPin, interpreters, load_target, source_build_settings
from edgebundle.toolchains import requirements
from edgebundle.toolchains.aptsources import default_sources, select_sources
from edgebundle.toolchains.binfmt import QEMU_CPU, qemu_cpu_env
from edgebundle.toolchains.bootstrap import ca_certificates_hook, mmdebstrap_argv
from edgebundle.toolchains.debroot import VENV, DebRoot, check_debian_pins, debian_requirements
from edgebundle.toolchains.namespace import CPU_LISTS, MOUNT_SCRIPT, Bind, namespace_argv
from edgebundle.toolchains.pipconfig import (
    ENV_PIP_CONF,
    pip_config_files,
    pip_environment,
    pip_local_paths,
    pip_settings,
)
from edgebundle.toolchains.venv import HostVenv
from tests.conftest import MODELS


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEBUNDLE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def on_x86_64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the host arch explicit, so the tests mean the same on an arm64 CI runner."""
    monkeypatch.setattr("edgebundle.toolchains.debroot.host_arch", lambda: "x86_64")
    monkeypatch.setattr("edgebundle.plan.host_arch", lambda: "x86_64")


# --- command lines -----------------------------------------------------------------------------


def test_namespace_argv_as_root() -> None:
    argv = namespace_argv(
        rootfs=Path("/cache/roots/arm64-abc/rootfs"),
        argv=["/opt/edgebundle/venv/bin/python", "-m", "PyInstaller", "/tmp/wd/app/main.py"],
        cwd="/tmp/wd",
        env={"PATH": "/usr/bin", "HOME": "/tmp"},
        binds=[Bind(path="/tmp/wd"), Bind(path="/opt/wheels", read_only=True)],
        emulated=True,
        privileged=True,
    )
    assert argv[:7] == ["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child", "--"]
    assert argv[7:10] == ["/bin/sh", "-c", MOUNT_SCRIPT]
    sep = argv.index("--", 10)
    assert argv[10:sep] == [
        "edgebundle-root",
        "/cache/roots/arm64-abc/rootfs",
        "1",  # emulated: the empty tmpfs over /sys/devices/system/cpu
        "0",  # not a user namespace
        "rw:/tmp/wd",
        "ro:/opt/wheels",
    ]
    assert argv[sep + 1 :] == [
        "chroot",
        "/cache/roots/arm64-abc/rootfs",
        "/usr/bin/env",
        "-i",
        "--chdir=/tmp/wd",
        "HOME=/tmp",
        "PATH=/usr/bin",
        "/opt/edgebundle/venv/bin/python",
        "-m",
        "PyInstaller",
        "/tmp/wd/app/main.py",
    ]


def test_namespace_argv_unprivileged_uses_a_user_namespace() -> None:
    argv = namespace_argv(
        rootfs=Path("/r"), argv=["true"], cwd=None, env={}, emulated=False, privileged=False
    )
    assert argv[: argv.index("--")] == [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--kill-child",
    ]
    assert argv[argv.index(MOUNT_SCRIPT) + 2 : argv.index(MOUNT_SCRIPT) + 5] == ["/r", "0", "1"]
    assert not any(a.startswith("--chdir") for a in argv)


def test_mount_script_mounts_what_the_build_needs_and_binds_at_the_same_path() -> None:
    for needed in (
        'mount -t proc proc "$root/proc"',
        'mount -t tmpfs -o size=64k,mode=755 nocpuinfo "$root/sys/devices/system/cpu"',
        'mount --rbind /dev "$root/dev"',
        'mount -t tmpfs -o mode=1777 tmp "$root/tmp"',
        'mount --bind "$path" "$root$path"',
        'mount -o remount,bind,ro "$root$path"',
        'exec "$@"',
    ):
        assert needed in MOUNT_SCRIPT


def test_an_emulated_root_sees_the_host_cpu_lists_and_no_per_cpu_directories(tmp_path: Path) -> None:
    """LiteRT's C API compiles no model for the CPU when XNNPACK's cpuinfo finds neither "possible"
    nor "present" (the arm64 target's model check); the caches of ai-edge-litert 2.2/2.3's crash stay out."""
    emulated = MOUNT_SCRIPT.index('if [ "$emulated" = 1 ]; then')
    assert MOUNT_SCRIPT.index(CPU_LISTS) > MOUNT_SCRIPT.index("nocpuinfo", emulated)
    cpu = tmp_path / "sys/devices/system/cpu"
    cpu.mkdir(parents=True)
    env = {"root": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run(["sh", "-euc", CPU_LISTS], check=True, env=env)
    assert sorted(p.name for p in cpu.iterdir()) == ["online", "possible", "present"]
    host = Path("/sys/devices/system/cpu/possible")
    if host.is_file():
        assert (cpu / "possible").read_text() == host.read_text()
        assert (cpu / "possible").read_text().strip()


def test_mmdebstrap_argv() -> None:
    argv = mmdebstrap_argv(
        debian_arch="arm64",
        packages=["python3", "binutils"],
        rootfs=Path("/c/.arm64-k.partial/rootfs"),
        sources=Path("/c/.arm64-k.partial/apt.sources"),
        suite="bookworm",
    )
    assert argv[: argv.index("mmdebstrap")] == [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--kill-child",
        "--",
    ]
    assert "--mode=root" in argv
    assert "--variant=essential" in argv
    assert "--arch=arm64" in argv
    assert "--include=binutils,python3" in argv
    assert not any(a.startswith("--setup-hook") for a in argv)
    assert argv[-3:] == ["bookworm", "/c/.arm64-k.partial/rootfs", "/c/.arm64-k.partial/apt.sources"]


def test_extra_ca_certificates_go_in_before_ca_certificates_is_configured() -> None:
    hook = ca_certificates_hook(
        [
            Path("/usr/local/share/ca-certificates/corp.crt"),
            Path("/usr/local/share/ca-certificates/x y/p.crt"),
        ]
    )
    assert hook == (
        'mkdir -p "$1"/usr/local/share/ca-certificates && '
        'cp /usr/local/share/ca-certificates/corp.crt "$1"/usr/local/share/ca-certificates/corp.crt && '
        "mkdir -p \"$1\"'/usr/local/share/ca-certificates/x y' && "
        "cp '/usr/local/share/ca-certificates/x y/p.crt' \"$1\"'/usr/local/share/ca-certificates/x y/p.crt'"
    )
    assert ca_certificates_hook([]) is None
    argv = mmdebstrap_argv(
        debian_arch="arm64",
        packages=["python3"],
        rootfs=Path("/r"),
        sources=Path("/s"),
        setup_hooks=[hook],
        suite="bookworm",
    )
    assert f"--setup-hook={hook}" in argv
    assert argv.index(f"--setup-hook={hook}") < argv.index("bookworm")


def test_every_root_can_build_a_runner_and_its_launcher() -> None:
    from edgebundle.backends.launcher import APT_PACKAGES as LAUNCHER

    root = debian_root(load_target("x86_64"), "pyinstaller")
    assert set(LAUNCHER) <= set(root.packages)
    assert {"python3", "python3-venv", "libpython3.11", "binutils", "ca-certificates"} <= set(root.packages)


# --- cache keys and toolchain choice ------------------------------------------------------------


def test_root_holds_the_host_venv_pins_but_numpy_from_debian(on_x86_64: None) -> None:
    target = load_target("arm64-tflite")
    root = debian_root(target, "pyinstaller")
    pins = requirements(target, "pyinstaller")
    assert HostVenv(target, "pyinstaller").requires == pins
    (debian,) = interpreters()["tflite-runtime"].debian_root
    assert (debian.distribution, debian.package) == ("numpy", "python3-numpy")
    assert debian.requirement in root.requires
    assert debian.requirement not in pins
    assert [r for r in root.requires if not r.startswith("numpy==")] == [
        r for r in pins if not r.startswith("numpy==")
    ]
    assert "python3-numpy" in root.packages
    assert any(r.startswith("tflite-runtime==") for r in root.requires)
    assert any(r.startswith("pyinstaller==") for r in root.requires)
    assert root.python == str(VENV / "bin" / "python")
    assert root.emulated


def test_a_litert_root_builds_pillow_from_source_and_numpy_never(on_x86_64: None) -> None:
    """The default targets' Pillow (JPEG and zlib only) is built in an arm64 root too, with the Debian
    packages that needs; NumPy, a source build on hosts, never is in a root (hours under QEMU)."""
    root = debian_root(load_target("arm64"), "pyinstaller")
    assert root.source_builds == {"pillow": source_build_settings("pillow")}
    assert "--config-settings=tiff=disable" in root.source_builds["pillow"]
    assert {"gcc", "libpython3.11-dev", "libjpeg-dev", "zlib1g-dev"} <= set(root.packages)
    tflite = debian_root(load_target("arm64-tflite"), "pyinstaller")
    assert tflite.source_builds == {}
    assert "libjpeg-dev" not in tflite.packages
    assert debian_root(load_target("x86_64-litert"), "pyinstaller").source_builds == {}  # NumPy 2 from PyPI


def test_an_emulated_root_runs_qemus_max_cpu_without_sme(
    on_x86_64: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU 7.2 gets SME wrong (LiteRT's int8 kernels answered garbage): every emulated command gets
    QEMU_CPU=max,sme=off, or the caller's own QEMU_CPU; a native root none."""
    monkeypatch.delenv("QEMU_CPU", raising=False)
    emulated = debian_root(load_target("arm64"), "pyinstaller")
    assert emulated.inside_env()["QEMU_CPU"] == QEMU_CPU == "max,sme=off"
    assert "QEMU_CPU" not in debian_root(load_target("x86_64"), "pyinstaller").inside_env()
    monkeypatch.setenv("QEMU_CPU", "cortex-a72")
    assert emulated.inside_env()["QEMU_CPU"] == "cortex-a72"
    assert qemu_cpu_env({}) == {"QEMU_CPU": "max,sme=off"}


def test_a_root_for_numpy_2_takes_every_pin_from_pypi(on_x86_64: None) -> None:
    target = load_target("x86_64-litert")
    root = debian_root(target, "pyinstaller")
    assert root.from_debian == ()
    assert root.requires == requirements(target, "pyinstaller")
    assert "python3-numpy" not in root.packages


def test_debian_requirements_replace_the_pin_they_stand_for() -> None:
    pin = DebianPin(distribution="numpy", package="python3-numpy", version="1.24.2")
    assert debian_requirements(["pillow==11.3.0", "numpy==1.26.4"], [pin], where="pins.toml") == [
        "numpy==1.24.2",
        "pillow==11.3.0",
    ]
    with pytest.raises(ConfigError, match=r"pins.toml: \[debian-root.numpy\]: numpy has no numpy==VERSION"):
        debian_requirements(["pillow==11.3.0"], [pin], where="pins.toml")


def test_a_root_refuses_numpy_that_is_not_debians() -> None:
    pin = DebianPin(distribution="numpy", package="python3-numpy", version="1.24.2")
    check_debian_pins([pin], {"numpy": ["1.24.2", "/usr/lib/python3/dist-packages"]})
    site = str(VENV / "lib/python3.11/site-packages")
    with pytest.raises(BuildError, match=r"numpy is 1\.24\.2 from /opt/edgebundle/venv/.*python3-numpy"):
        check_debian_pins([pin], {"numpy": ["1.24.2", site]})
    with pytest.raises(BuildError, match=r"numpy is 1\.24\.3 from .*expects 1\.24\.2"):
        check_debian_pins([pin], {"numpy": ["1.24.3", "/usr/lib/python3/dist-packages"]})


def test_root_path_is_target_and_hash_of_its_pinned_contents(cache: Path, on_x86_64: None) -> None:
    target = load_target("arm64")
    root = debian_root(target, "pyinstaller")
    assert root.path.parent == cache / "roots"
    name, key = root.path.name.rsplit("-", 1)
    assert name == "arm64"
    assert len(key) == 12
    assert int(key, 16) >= 0
    assert root.rootfs == root.path / "rootfs"
    assert root.library_root == root.rootfs
    # Same pins, same root; another pin, another root.
    assert debian_root(load_target("aarch64"), "pyinstaller").path == root.path
    more = dataclasses.replace(target, extra_requires=("scipy==1.14.1",))
    assert debian_root(more, "pyinstaller").path != root.path
    assert debian_root(target, "nuitka").path != root.path


def test_host_venv_keeps_its_cache_key() -> None:
    """Refactoring must not orphan the environments developers already have: the key is the hash of
    the layout version, the Python, the pins and the source builds, as it has been since the first
    NumPy source build (an environment costs minutes to make)."""
    import hashlib
    import json

    target = load_target("x86_64")
    venv = HostVenv(target, "pyinstaller")
    parts = ["1", target.python, venv.requires, venv.source_builds]
    old = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
    assert venv.path.name.endswith(f"-py{target.python}-{old}")


def test_root_refuses_a_python_debian_does_not_have(on_x86_64: None) -> None:
    target = dataclasses.replace(load_target("arm64"), python="3.10")
    with pytest.raises(
        ConfigError, match=r"python = '3\.10', but a build root \(Debian bookworm\) has Python 3\.11"
    ):
        debian_root(target, "pyinstaller")


def _plan(target: str, isolated: bool = False) -> BuildPlan:
    return make_plan(
        model=MODELS / "digits_float.tflite",
        recipe=load_recipe("digits"),
        target=load_target(target),
        backend="pyinstaller",
        output=None,
        isolated=isolated,
    )


def test_for_plan_picks_host_venv_root_or_isolated_root(
    on_x86_64: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    native = _plan("x86_64")
    assert isinstance(for_plan(native), HostVenv)
    assert "managed venv" in native.summary()
    isolated = _plan("x86_64", isolated=True)
    chosen = for_plan(isolated)
    assert isinstance(chosen, DebRoot)
    assert not chosen.emulated
    assert chosen.library_root is None
    foreign = _plan("arm64")
    chosen = for_plan(foreign)
    assert isinstance(chosen, DebRoot)
    assert chosen.emulated
    assert "emulated aarch64 Debian root" in foreign.summary()


# --- apt sources -------------------------------------------------------------------------------

HOST_DEB822 = """\
Types: deb deb-src
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main

Types: deb
URIs: http://example.org/debian
Suites: bookworm
Components: main
Enabled: no
"""


def test_select_sources_keeps_the_hosts_bookworm_mirror() -> None:
    text = select_sources(
        [("debian.sources", HOST_DEB822), ("nodesource.sources", "Types: deb\nURIs: x\n")], "bookworm"
    )
    assert text == (
        "Types: deb\n"
        "Suites: bookworm bookworm-updates\n"
        "URIs: http://deb.debian.org/debian\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "Suites: bookworm-security\n"
        "URIs: http://deb.debian.org/debian-security\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def test_select_sources_converts_one_line_entries() -> None:
    text = select_sources(
        [
            (
                "sources.list",
                "deb [arch=amd64 signed-by=/k.gpg] http://mirror.local/debian bookworm main contrib\n"
                "deb-src http://mirror.local/debian bookworm main\n"
                "deb http://archive.ubuntu.com/ubuntu noble main\n",
            )
        ],
        "bookworm",
    )
    assert text == (
        "Types: deb\nSuites: bookworm\nURIs: http://mirror.local/debian\nComponents: main contrib\n"
        "Signed-By: /k.gpg\n"
    )


def test_select_sources_none_on_a_host_without_debian() -> None:
    assert (
        select_sources([("ubuntu.sources", "Types: deb\nURIs: http://a/ubuntu\nSuites: noble\n")], "bookworm")
        is None
    )
    assert "Suites: bookworm bookworm-updates" in default_sources("bookworm")


# --- pip configuration -------------------------------------------------------------------------


def test_pip_environment_passes_pip_and_proxy_settings_only() -> None:
    env = pip_environment(
        {
            "PIP_FIND_LINKS": "/opt/wheels",
            "PIP_DEFAULT_TIMEOUT": "180",
            "PIP_TARGET": "/somewhere",
            "PIP_CONFIG_FILE": "/home/u/pip.conf",
            "https_proxy": "http://proxy:3128",
            "NO_PROXY": "localhost",
            "PYTHONPATH": "/x",
            "HOME": "/home/u",
        }
    )
    assert env == {
        "PIP_FIND_LINKS": "/opt/wheels",
        "PIP_DEFAULT_TIMEOUT": "180",
        "PIP_CONFIG_FILE": str(ENV_PIP_CONF),
        "https_proxy": "http://proxy:3128",
        "NO_PROXY": "localhost",
    }


def _pips_own_files(environ: dict[str, str]) -> set[Path]:
    """The configuration files pip itself reads (``pip config debug``), but the site file of the
    Python that runs it (a root's venv has its own)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "debug"],
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found, variant = set(), ""
    for line in out.splitlines():
        if not line.startswith(" "):
            variant = line.rstrip(":")
        elif variant != "site" and line.endswith(", exists: True"):
            found.add(Path(line.strip().removesuffix(", exists: True")))
    return found


@pytest.mark.parametrize("with_env_file", [False, True])
def test_pip_config_files_agree_with_pips_own_list(tmp_path: Path, with_env_file: bool) -> None:
    """Discovery is hand-written (pip is not guaranteed on the host); pip is the reference."""
    for conf in (
        "xdg1/pip/pip.conf",
        "xdg2/pip/pip.conf",
        "cfg/pip/pip.conf",
        "home/.pip/pip.conf",
        "e.conf",
    ):
        (tmp_path / conf).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / conf).write_text("[global]\ntimeout = 60\n")
    environ = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_DIRS": f"{tmp_path / 'xdg1'}:{tmp_path / 'xdg2'}",
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        **({"PIP_CONFIG_FILE": str(tmp_path / "e.conf")} if with_env_file else {}),
    }
    ours = {host for host, _ in pip_config_files(environ, tmp_path / "home")}
    pips = _pips_own_files(environ)
    assert pips <= ours
    # With $PIP_CONFIG_FILE pip skips the user's files; copied all the same, the root's pip skips them
    # too (the copy of $PIP_CONFIG_FILE is there as well).
    skipped = {tmp_path / "cfg/pip/pip.conf", tmp_path / "home/.pip/pip.conf"} if with_env_file else set()
    assert ours - pips == skipped


def test_pip_config_files_site_user_and_env(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "pip").mkdir(parents=True)
    (xdg / "pip" / "pip.conf").write_text("[global]\nconstraint = " + str(xdg / "pip" / "c.txt") + "\n")
    (xdg / "pip" / "c.txt").write_text("torch<=2\n")
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text("[global]\nfind-links = /opt/wheels\n")
    env_conf = tmp_path / "env.conf"
    env_conf.write_text("[global]\n")
    found = pip_config_files({"XDG_CONFIG_DIRS": str(xdg), "PIP_CONFIG_FILE": str(env_conf)}, home)
    inside = {str(host): str(path) for host, path in found}
    assert inside[str(xdg / "pip" / "pip.conf")] == str(xdg / "pip" / "pip.conf")
    assert inside[str(xdg / "pip" / "c.txt")] == str(xdg / "pip" / "c.txt")
    assert inside[str(home / ".config" / "pip" / "pip.conf")] == "/root/.config/pip/pip.conf"
    assert inside[str(env_conf)] == str(ENV_PIP_CONF)
    assert all(isinstance(p, PurePosixPath) for _, p in found)


def test_pip_local_paths_from_config_and_environment(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\n"
        "find-links = /opt/wheels\n"
        "extra-index-url = file:///opt/pypi/simple https://example.org/simple\n"
        "index-url = https://pypi.org/simple\n"
        "constraint = /etc/xdg/pip/constraints.txt\n"
        "timeout = 60\n"
    )
    settings = pip_settings({"PIP_FIND_LINKS": "/srv/wheels ./rel", "HOME": "/root"}, [conf])
    assert ("find-links", "/srv/wheels ./rel") in settings
    # A file:// index is bound by its parent: its pages link to ../../files/... beside simple/.
    assert pip_local_paths(settings) == [
        "/opt/wheels",
        "/opt/pypi",
        "/etc/xdg/pip/constraints.txt",
        "/srv/wheels",
    ]
