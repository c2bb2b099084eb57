"""The Nuitka backend's argv, as data (the real build is tests/integration/test_build_nuitka.py)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgebundle.backends import BACKENDS, RUNTIME_SRC, Stage, nuitka, pyinstaller
from edgebundle.cli import main
from edgebundle.errors import ConfigError, ToolMissingError
from edgebundle.plan import check_native
from edgebundle.target import BACKENDS as PLAN_BACKENDS
from edgebundle.target import host_arch, load_target
from tests.conftest import MODELS


def stage(tmp_path: Path, *, strip: bool = True, pack_relocations: bool = True, numpy: bool = True) -> Stage:
    s = Stage(
        workdir=tmp_path,
        name="run",
        interpreter_module="tflite_runtime.interpreter" if numpy else "ebrt.litert",
        numpy=numpy,
        strip=strip,
        pack_relocations=pack_relocations,
    )
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


def test_numpy_and_pillow_are_bytecode_and_the_runtime_compiled(tmp_path: Path) -> None:
    """Compiled, NumPy's and Pillow's Python code was 9 MB of resident machine code (nuitka.BYTECODE)."""
    argv = nuitka.command("python", stage(tmp_path))
    assert set(options(argv, "--noinclude-custom-mode")) == {"numpy:bytecode", "PIL:bytecode"}
    assert not any(m.startswith(("ebrt", "tflite_runtime")) for m in nuitka.BYTECODE)


def test_no_mode_of_the_runtime_imports_what_is_left_out_of_the_standard_library() -> None:
    """Every module the runtime imports by name (its own sources, parsed) stays in the binary: a
    module left out would fail only when that import runs."""
    imported: set[str] = set()
    for path in RUNTIME_SRC.glob("*.py"):
        if path.stem == "buildtime":  # run by the builder, never in the binary (ebrt.buildtime)
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    assert {"asyncio", "json", "zipfile", "argparse"} <= imported  # the parse found them
    left_out = {*nuitka.UNUSED_STDLIB, *nuitka.NOFOLLOW}
    assert not {m for m in imported if any(m == x or m.startswith(x + ".") for x in left_out)}
    assert {"fractions", "colorsys"}.isdisjoint(left_out)  # Pillow imports them (TIFF/EXIF, colours)


def test_a_program_without_numpy_leaves_it_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The litert interpreter (Stage.numpy False): NumPy is not followed, as PyInstaller excludes it;
    nothing of NumPy's is asked for, nor its run-time hook run."""
    argv = nuitka.command("python", stage(tmp_path / "lean", numpy=False))
    nofollow = set(options(argv, "--nofollow-import-to"))
    assert set(pyinstaller.WITH_NUMPY) == {"numpy"}
    assert set(pyinstaller.WITH_NUMPY) <= nofollow
    assert options(argv, "--noinclude-custom-mode") == ["PIL:bytecode"]
    assert "ebrt.litert" in options(argv, "--include-module")
    assert "secrets" not in options(argv, "--include-module")  # NumPy's bit generators' import
    assert "resource" in options(argv, "--include-module")
    default = nuitka.command("python", stage(tmp_path / "default"))
    assert not set(pyinstaller.WITH_NUMPY) & set(options(default, "--nofollow-import-to"))

    monkeypatch.setenv("EDGEBUNDLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(nuitka, "TOOLS", ())
    s = stage(tmp_path / "prepared", numpy=False)
    s.entry.write_text("from ebrt.app import entry\n\nentry()\n")
    nuitka.prepare(s)
    assert s.entry.read_text() == "from ebrt.app import entry\n\nentry()\n"


def test_the_plugin_carries_the_litert_library_where_the_binding_looks() -> None:
    """The plugin runs inside Nuitka and imports nothing of edgebundle: its names are the binding's."""
    from edgebundle.runtime import litert

    source = (nuitka.PLUGIN_FILES / nuitka.PLUGIN).read_text()
    assert f'LITERT_PACKAGE = "{litert.PACKAGE_DIR}"' in source
    assert f'LITERT_LIBRARY = "{litert.LIBRARY}"' in source
    assert 'LITERT_BINDING = "ebrt.litert"' in source


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stage:
    """A stage after nuitka.prepare (the tools it checks for are not what these tests are about: CI's
    lint job has no patchelf)."""
    monkeypatch.setenv("EDGEBUNDLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(nuitka, "TOOLS", ())
    s = stage(tmp_path)
    nuitka.prepare(s)
    return s


def test_package_config_is_nuitka_yaml_next_to_the_stage(prepared: Stage, tmp_path: Path) -> None:
    s = prepared
    (config,) = options(nuitka.command("python", s), "--user-package-configuration-file")
    assert Path(config).parent == tmp_path
    entries = yaml.safe_load(Path(config).read_text())
    assert [e["module-name"] for e in entries] == ["numpy.core._add_newdocs"]
    assert entries[0]["anti-bloat"][0]["module_code"] == ""


def env_value(argv: list[str], name: str) -> str:
    """A variable that the command sets through env(1), before the interpreter."""
    (value,) = (a.split("=", 1)[1] for a in argv[: argv.index("-m")] if a.startswith(name + "="))
    return value


def test_the_plugin_goes_next_to_the_stage_and_links_its_c_file(prepared: Stage, tmp_path: Path) -> None:
    """A build root sees only the stage's files: the plugin and its C file are copied there."""
    s = prepared
    (plugin,) = options(nuitka.command("python", s), "--user-plugin")
    assert Path(plugin).is_relative_to(tmp_path)
    assert Path(plugin).is_file()
    assert (Path(plugin).parent / "release_bytecode.c").read_text() == (
        nuitka.PLUGIN_FILES / "release_bytecode.c"
    ).read_text()
    # every wrapped function is one that a C file of the plugin defines __wrap_ for
    ldflags = env_value(nuitka.command("python", s), "LDFLAGS").split()
    wrapped = [f.split("=", 1)[1] for f in ldflags if f.startswith("-Wl,--wrap=")]
    assert wrapped == ["PyMarshal_ReadObjectFromString", "patchInspectModule"]
    sources = "".join(c.read_text() for c in Path(plugin).parent.glob("*.c"))
    for name in wrapped:
        assert f"__wrap_{name}(" in sources
        assert f"__real_{name}(" in sources


def test_packed_relocations_only_where_the_glibc_floor_allows(tmp_path: Path) -> None:
    relr = "-Wl,-z,pack-relative-relocs"
    assert relr in env_value(nuitka.command("python", stage(tmp_path / "a")), "LDFLAGS").split()
    old = stage(tmp_path / "b", pack_relocations=False)
    assert relr not in env_value(nuitka.command("python", old), "LDFLAGS").split()


def test_nuitkas_own_c_is_compiled_for_size(tmp_path: Path) -> None:
    """-Os: the machine code of the compiled runtime and Nuitka's helpers is nearly all resident."""
    assert env_value(nuitka.command("python", stage(tmp_path)), "CCFLAGS") == "-Os"


@pytest.mark.parametrize("source", sorted(nuitka.PLUGIN_FILES.glob("*.c")), ids=lambda p: p.name)
def test_plugin_c_compiles_against_python(source: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc")
    include = sysconfig.get_paths()["include"]
    proc = subprocess.run(
        [
            gcc,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            f"-I{include}",
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_shows_phases_and_paces_the_long_ones(tmp_path: Path) -> None:
    """Nuitka's own lines (as --show-progress and --show-scons print them on a pipe) become a few."""
    build = tmp_path / "program.build"
    (build / "static_src").mkdir(parents=True)
    (build / "blobs").mkdir()
    for name in ("module.__main__.c", "__helpers.c", "static_src/MainProgram.c", "blobs/__constant.bin"):
        (build / name).write_text("")
    shown: list[str] = []
    clock = Clock()
    on_line = nuitka.Progress(build, shown.append, clock=clock, every=30)
    on_line("Nuitka: Starting Python compilation with:")
    on_line("Nuitka:WARNING: Cannot validate schema due to lack of 'jsonschema' package.")
    on_line("Nuitka-Plugins:anti-bloat: Not including '_json' automatically in order to avoid bloat")
    on_line("Nuitka-Progress: PASS 1:")
    for n, module in enumerate(["__main__", "ebrt", "ebrt.app", "numpy"]):
        clock.now += 10
        on_line(f"Nuitka-Progress: Optimizing module '{module}', {40 - n} more modules to go after that.")
        on_line(f"Nuitka-Progress: Doing module local optimizations for '{module}'.")
    on_line("Nuitka:WARNING: Standalone with Python package from Debian installation may not be working.")
    on_line("Nuitka:WARNING:     Complex topic! More information can be found at https://nuitka.net/info/x")
    on_line("Nuitka:WARNING: a warning nobody has seen yet")
    on_line("Nuitka: Completed Python level compilation and optimization.")
    on_line("Nuitka: Running C compilation via Scons.")
    (build / "__constants_data___constant.c").write_text("")  # written by Scons
    for name in ("__constants_data___constant", "__helpers", "module.__main__", "static_src/MainProgram"):
        clock.now += 20
        on_line(f'"/usr/bin/ccache" "/usr/bin/gcc" -o {name}.o -c -std=c11 -fwrapv {name}.c')
    on_line(
        "Nuitka-Scons: Backend C linking with 4 files (no progress information available for this stage)."
    )
    on_line('"/usr/bin/gcc" -o run -fno-lto -s @"@link_input.txt"')
    on_line("Nuitka-Scons: Compiled 4 C files using ccache.")
    on_line("Nuitka: Successfully created '/tmp/x/program.dist/run'.")
    assert shown == [
        "nuitka: following imports and optimising modules (Python -> C)",
        "nuitka: optimising modules (pass 1): 3 done, 38 to go",
        "nuitka: a warning nobody has seen yet",
        "nuitka: Completed Python level compilation and optimization.",
        f"nuitka: compiling 4 C files ({nuitka.jobs()} at a time, ccache)",
        "nuitka: compiling C: 2/4 files started",
        "nuitka: compiling C: 4/4 files started",
        "nuitka: Backend C linking with 4 files (no progress information available for this stage).",
        "nuitka: Compiled 4 C files using ccache.",
        "nuitka: Successfully created '/tmp/x/program.dist/run'.",
    ]


def test_progress_is_what_the_command_asks_nuitka_for(tmp_path: Path) -> None:
    argv = nuitka.command("python", stage(tmp_path))
    assert set(nuitka.PROGRESS_FLAGS) <= set(argv)
    assert "PYTHONUNBUFFERED=1" in argv[: argv.index("python")]  # lines as they happen, not in blocks
    assert isinstance(nuitka.progress(stage(tmp_path / "p"), print), nuitka.Progress)
