from __future__ import annotations

from pathlib import Path

from edgebundle.backends import BACKENDS, Stage, pyinstaller


def stage(tmp_path: Path) -> Stage:
    s = Stage(workdir=tmp_path, name="digits", interpreter_module="tflite_runtime.interpreter")
    s.app.mkdir()
    for name in ("selftest.png", "model.tflite", "manifest.json", "main.py"):
        (s.app / name).write_text("x")
    return s


def test_command_is_a_onefile_build_with_data_and_excludes(tmp_path: Path) -> None:
    s = stage(tmp_path)
    argv = pyinstaller.command("/env/bin/python", s)
    assert argv[:3] == ["/env/bin/python", "-m", "PyInstaller"]
    assert "--onefile" in argv
    assert argv[argv.index("--name") + 1] == "digits"
    assert argv[argv.index("--distpath") + 1] == str(tmp_path / "dist")
    datas = [argv[i + 1] for i, a in enumerate(argv) if a == "--add-data"]
    # sorted, and the entry script is not data
    assert datas == [f"{s.app / n}:." for n in ("manifest.json", "model.tflite", "selftest.png")]
    hidden = [argv[i + 1] for i, a in enumerate(argv) if a == "--hidden-import"]
    assert "tflite_runtime.interpreter" in hidden
    excluded = [argv[i + 1] for i, a in enumerate(argv) if a == "--exclude-module"]
    assert {"ebrt.buildtime", "tkinter", "unittest"} <= set(excluded)
    assert argv[-1] == str(s.entry)
    assert pyinstaller.result(s) == tmp_path / "dist" / "digits"


def test_registry() -> None:
    assert BACKENDS["pyinstaller"] is pyinstaller


def test_strip_follows_the_stage(tmp_path: Path) -> None:
    s = stage(tmp_path)
    assert "--strip" in pyinstaller.command("python", s)
    unstripped = Stage(workdir=s.workdir, name=s.name, interpreter_module=s.interpreter_module, strip=False)
    assert "--strip" not in pyinstaller.command("python", unstripped)
