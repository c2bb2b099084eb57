"""The Nuitka backend's argv, as data (the real build is tests/integration/test_build_nuitka.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgebundle.backends import BACKENDS, Stage, nuitka, pyinstaller
from edgebundle.cli import main
from edgebundle.errors import ConfigError, ToolMissingError
from edgebundle.plan import BACKENDS as PLAN_BACKENDS
from edgebundle.plan import check_native
from edgebundle.target import host_arch, load_target
from tests.conftest import MODELS


def stage(tmp_path: Path, *, strip: bool = True) -> Stage:
    s = Stage(workdir=tmp_path, name="run", interpreter_module="tflite_runtime.interpreter", strip=strip)
    s.app.mkdir(parents=True)
    for name in ("selftest.png", "model.tflite", "manifest.json", "main.py"):
        (s.app / name).write_text("x")
    return s


def options(argv: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]


def test_registered_everywhere() -> None:
    assert BACKENDS["nuitka"] is nuitka
    assert "nuitka" in PLAN_BACKENDS


def test_command_is_a_standalone_build_of_the_entry_without_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEBUNDLE_CACHE_DIR", str(tmp_path / "cache"))
    s = stage(tmp_path)
    argv = nuitka.command("/env/bin/python", s)
    python = argv.index("/env/bin/python")
    assert argv[:4] == ["sh", "-c", 'exec "$@" 2>&1', "nuitka"]
    assert argv[4] == "env"
    assert argv[python : python + 3] == ["/env/bin/python", "-m", "nuitka"]
    # Nuitka's caches and ccache's with edgebundle's, so repeat builds compile nothing
    assert f"NUITKA_CACHE_DIR={tmp_path / 'cache' / 'nuitka'}" in argv[:python]
    assert f"CCACHE_DIR={tmp_path / 'cache' / 'nuitka' / 'ccache'}" in argv[:python]
    assert "--standalone" in argv  # which follows every import not excluded
    assert "--onefile" not in argv  # the launcher gives cached one-file starts
    assert options(argv, "--output-filename") == ["run"]
    assert options(argv, "--output-dir") == [str(tmp_path / "nuitka")]
    assert nuitka.result(s) == tmp_path / "nuitka" / f"{options(argv, '--output-folder-name')[0]}.dist"
    assert {"tflite_runtime.interpreter", "resource"} <= set(options(argv, "--include-module"))
    assert not any("model.tflite" in a or "manifest.json" in a for a in argv)
    assert argv[-1] == str(s.entry)
    assert "--unstripped" not in argv
    assert "--unstripped" in nuitka.command("python", stage(tmp_path / "u", strip=False))


def test_nothing_unused_is_compiled(tmp_path: Path) -> None:
    argv = nuitka.command("python", stage(tmp_path))
    nofollow = set(options(argv, "--nofollow-import-to"))
    assert {"ebrt.buildtime", "edgebundle", "click", "tkinter", "unittest", "*.tests"} <= nofollow
    assert set(pyinstaller.EXCLUDES) - nuitka.NOT_EXCLUDED <= nofollow
    assert "numpy.random" in nofollow  # the run-time hook stands in for it (test_prepare_...)
    runtime_needs = {"numpy", "numpy.fft", "PIL.Image", "ctypes", "json", "secrets", "resource"}
    assert not runtime_needs & nofollow
    assert "--noinclude-pytest-mode=nofollow" in argv
    assert {"no_site", "no_docstrings"} <= set(options(argv, "--python-flag"))


def test_prepare_runs_the_numpy_hook_before_the_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEBUNDLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(nuitka, "TOOLS", ())  # not what this test is about (CI's lint job has no patchelf)
    s = stage(tmp_path)
    s.entry.write_text("from ebrt.app import entry\n\nentry()\n")
    nuitka.prepare(s)
    entry = s.entry.read_text()
    assert entry.startswith(nuitka.NUMPY_HOOK.read_text())
    assert entry.endswith("from ebrt.app import entry\n\nentry()\n")
    compile(entry, str(s.entry), "exec")  # __future__ import still first
    assert (tmp_path / "cache" / "nuitka").is_dir()


def test_prepare_names_a_missing_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("EDGEBUNDLE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ToolMissingError, match="apt-get install"):
        nuitka.prepare(stage(tmp_path))


def test_foreign_arch_is_refused_with_where_to_build_instead() -> None:
    arm64 = load_target("arm64")
    if arm64.arch == host_arch():
        pytest.skip("native arm64 host")
    with pytest.raises(ConfigError, match=r"native aarch64 host or CI runner \(ubuntu-24.04-arm\)") as e:
        check_native("nuitka", arm64)
    assert "\n" not in str(e.value)
    check_native("pyinstaller", arm64)  # cross-built in the emulated root


def test_cli_refuses_nuitka_arm64_before_building(tmp_path: Path) -> None:
    if host_arch() == "aarch64":
        pytest.skip("native arm64 host")
    out = tmp_path / "x"
    args = ["build", str(MODELS / "digits_float.tflite"), "--recipe", "digits", "--target", "arm64"]
    result = CliRunner().invoke(main, [*args, "--backend", "nuitka", "-o", str(out)])
    assert result.exit_code == ConfigError.exit_code, result.output
    assert result.stderr.count("\n") == 1
    assert "need a native aarch64 host or CI runner" in result.stderr
    assert not out.exists()


def test_nuitka_alone_may_come_from_its_sdist() -> None:
    from edgebundle.toolchains import pip_install_argv

    argv = pip_install_argv("py", ["nuitka==4.3.3", "numpy==1.26.4"])
    # pip: a name given to --no-binary wins over --only-binary=:all:
    assert argv.index("--only-binary=:all:") < argv.index("--no-binary=nuitka")
    assert not any(a.startswith("--no-binary") for a in pip_install_argv("py", ["pyinstaller==6.22.3"]))
