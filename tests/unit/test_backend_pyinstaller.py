from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

from edgebundle.backends import BACKENDS, Stage, pyinstaller


def stage(tmp_path: Path) -> Stage:
    s = Stage(workdir=tmp_path, name="run", interpreter_module="tflite_runtime.interpreter")
    s.app.mkdir()
    for name in ("selftest.png", "model.tflite", "manifest.json", "main.py"):
        (s.app / name).write_text("x")
    return s


def values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_command_is_a_onedir_build_without_the_model(tmp_path: Path) -> None:
    s = stage(tmp_path)
    argv = pyinstaller.command("/env/bin/python", s)
    # its own binary cache, which --clean empties (a shared one broke concurrent builds)
    assert argv[:2] == ["env", f"PYINSTALLER_CONFIG_DIR={tmp_path / 'pyinstaller-config'}"]
    assert argv[2:5] == ["/env/bin/python", "-m", "PyInstaller"]
    assert "--onedir" in argv
    assert "--onefile" not in argv
    assert argv[argv.index("--name") + 1] == "run"
    assert argv[argv.index("--distpath") + 1] == str(tmp_path / "dist")
    # the model, manifest and self-test files go into the binary's payload, never into the runner
    assert "--add-data" not in argv
    assert "tflite_runtime.interpreter" in values(argv, "--hidden-import")
    assert argv[-1] == str(s.entry)
    assert pyinstaller.result(s) == tmp_path / "dist" / "run"


def test_modules_as_files_without_docstrings_and_our_hooks(tmp_path: Path) -> None:
    s = stage(tmp_path)
    argv = pyinstaller.command("python", s)
    assert values(argv, "--debug") == ["noarchive"]
    assert values(argv, "--optimize") == ["2"]
    assert values(argv, "--python-option") == ["X utf8"]  # UTF-8 mode: the codecs left out
    assert values(argv, "--additional-hooks-dir") == [str(pyinstaller.hooks_dir(s))]
    assert values(argv, "--runtime-hook") == [
        str(pyinstaller.hooks_dir(s) / "pyi_rth_edgebundle_split.py"),
        str(pyinstaller.hooks_dir(s) / "pyi_rth_edgebundle_numpy.py"),
    ]
    # hooks must be inside the stage: a build root sees nothing else
    assert pyinstaller.hooks_dir(s).is_relative_to(s.workdir)


def test_excludes(tmp_path: Path) -> None:
    excluded = set(values(pyinstaller.command("python", stage(tmp_path)), "--exclude-module"))
    assert excluded == set(pyinstaller.EXCLUDES) | set(pyinstaller.UNUSED_CODECS)
    assert {"ebrt.buildtime", "tkinter", "unittest", "ssl", "_hashlib", "multiprocessing"} <= excluded
    assert {"numpy.random", "PIL._avif", "PIL._webp", "unicodedata"} <= excluded
    assert {"numpy.linalg._umath_linalg", "numpy.linalg.lapack_lite"} <= excluded  # LAPACK
    # what the runtime itself imports must never be excluded
    runtime_needs = {"numpy", "PIL.Image", "PIL.PngImagePlugin", "PIL.JpegImagePlugin", "ctypes", "json"}
    assert not runtime_needs & excluded


def test_a_binary_without_numpy_leaves_out_formats_and_dates(tmp_path: Path) -> None:
    s = dataclasses.replace(stage(tmp_path), numpy=False)
    excluded = set(values(pyinstaller.command("python", s), "--exclude-module"))
    assert excluded == {"numpy"} | set(
        pyinstaller.EXCLUDES + pyinstaller.UNUSED_CODECS + pyinstaller.LEAN_EXCLUDES
    )
    assert {"PIL.TgaImagePlugin", "PIL.Jpeg2KImagePlugin", "PIL.PdfParser", "datetime"} <= excluded
    # preprocess.DECODES, EXIF (TIFF's plugin, fractions and decimal), GIF (ImageMath), --annotate
    reads = {f"PIL.{f}ImagePlugin" for f in ("Jpeg", "Mpo", "Png", "Bmp", "Gif", "Ppm", "Tiff")}
    needed = reads | {"PIL.ImageMath", "PIL._imagingmath", "fractions", "decimal", "_decimal", "numbers"}
    assert not (needed | {"PIL.ImageDraw", "PIL.ImageFont", "PIL.features"}) & excluded


def test_the_codecs_left_out_are_all_the_others() -> None:
    """UNUSED_CODECS is Python 3.11's encodings package less CODECS (a codec it names that the
    targets' Python lacks, or one it has that is not named, shows here)."""
    if sys.version_info[:2] != (3, 11):
        return  # the targets' Python is 3.11; other versions' packages differ slightly
    import encodings
    import pkgutil

    every = {m.name for m in pkgutil.iter_modules(encodings.__path__)}
    left_out = {m.removeprefix("encodings.") for m in pyinstaller.UNUSED_CODECS if m.startswith("encodings.")}
    assert left_out | pyinstaller.CODECS == every
    assert not left_out & pyinstaller.CODECS


def test_prepare_copies_the_hooks(tmp_path: Path) -> None:
    s = stage(tmp_path)
    pyinstaller.prepare(s)
    hooks = pyinstaller.hooks_dir(s)
    rthooks = ast.literal_eval((hooks / "rthooks.dat").read_text())
    # each module's hook replaced by ours (a no-op), so PyInstaller's are not run at every start
    assert set(rthooks) == {"inspect", "pkgutil"}
    for files in rthooks.values():
        for name in files:
            assert (hooks / "rthooks" / name).is_file()
    assert (hooks / "pyi_rth_edgebundle_numpy.py").is_file()
    assert (hooks / pyinstaller.SPLIT_HOOK).is_file()


def test_numpy_hook_stands_in_for_what_is_left_out() -> None:
    """With the run-time hook, NumPy imports and computes without numpy.random or LAPACK, and using
    either says that it is not in the binary."""
    script = f"""
exec(open({str(pyinstaller.HOOKS / "pyi_rth_edgebundle_numpy.py")!r}).read())
import numpy as np
a = np.arange(4, dtype=np.float32).reshape(2, 2)
assert (a @ a).tolist() == [[2, 3], [6, 11]]
for use in (lambda: np.linalg.inv(a), lambda: np.random.rand(2)):
    try:
        use()
    except ModuleNotFoundError as exc:
        print(exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "numpy.linalg._umath_linalg is not part of this binary (left out by edgebundle)",
        "numpy.random is not part of this binary (left out by edgebundle)",
    ]


def test_registry() -> None:
    assert BACKENDS["pyinstaller"] is pyinstaller


def test_strip_follows_the_stage(tmp_path: Path) -> None:
    s = stage(tmp_path)
    assert "--strip" in pyinstaller.command("python", s)
    unstripped = Stage(workdir=s.workdir, name=s.name, interpreter_module=s.interpreter_module, strip=False)
    assert "--strip" not in pyinstaller.command("python", unstripped)


def make_onedir(root: Path) -> Path:
    internal = root / "run" / "_internal"
    for rel in [
        "argparse.pyc",
        "json/__init__.pyc",
        "json/decoder.pyc",
        "email/mime/__init__.pyc",
        "email/__init__.pyc",
        "numpy/__init__.pyc",
        "numpy/core/_multiarray_umath.so",
        "ebrt/__init__.pyc",
        "ebrt/app.pyc",
        "PIL/__init__.pyc",
        "PIL/Image.pyc",
        "PIL/_imaging.cpython-311-x86_64-linux-gnu.so",
        "PIL/sub/__init__.pyc",
        "nspkg/mod.pyc",
        "deep/__init__.pyc",
        "deep/sub/_ext.cpython-311-x86_64-linux-gnu.so",
        "libz.so.1",
    ]:
        (internal / rel).parent.mkdir(parents=True, exist_ok=True)
        (internal / rel).write_bytes(rel.encode())
    return root / "run"


def test_finish_zips_pure_python_and_leaves_the_rest(tmp_path: Path) -> None:
    import zipfile

    folder = make_onedir(tmp_path)
    pyinstaller.finish(folder)
    internal = folder / "_internal"
    with zipfile.ZipFile(folder / pyinstaller.LIBRARY_ZIP) as z:
        names = sorted(z.namelist())
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert z.read("json/decoder.pyc") == b"json/decoder.pyc"
    assert names == [
        "PIL/Image.pyc",
        "PIL/__init__.pyc",
        "PIL/sub/__init__.pyc",
        "argparse.pyc",
        "ebrt/__init__.pyc",
        "ebrt/app.pyc",
        "email/__init__.pyc",
        "email/mime/__init__.pyc",
        "json/__init__.pyc",
        "json/decoder.pyc",
    ]
    left = sorted(p.relative_to(internal).as_posix() for p in internal.rglob("*"))
    assert left == [
        "PIL",
        "PIL/_imaging.cpython-311-x86_64-linux-gnu.so",  # compiled, in the top folder: split
        "base_library.zip",
        "deep",  # compiled extensions deeper: stays a folder
        "deep/__init__.pyc",
        "deep/sub",
        "deep/sub/_ext.cpython-311-x86_64-linux-gnu.so",
        "libz.so.1",
        "nspkg",  # no __init__: a namespace package, which zipimport would not find
        "nspkg/mod.pyc",
        "numpy",  # compiled extensions deeper: stays a folder
        "numpy/__init__.pyc",
        "numpy/core",
        "numpy/core/_multiarray_umath.so",
    ]


def test_the_split_hook_finds_compiled_modules_beside_the_zip(tmp_path: Path) -> None:
    """A split package (finish): its Python modules from base_library.zip, its compiled ones from its
    folder, through the run-time hook, in a fresh interpreter that has the zip first on its path."""
    import _json  # a compiled module of the standard library, to stand in for Pillow's _imaging
    import importlib.machinery
    import zipfile

    compiled = Path(_json.__file__)
    assert compiled.suffix == ".so"
    with zipfile.ZipFile(tmp_path / "base_library.zip", "w") as z:
        z.writestr("pkg/__init__.py", "")
        z.writestr("pkg/pure.py", "from . import _json\nSCANNER = _json.make_scanner")
    (tmp_path / "pkg").mkdir()
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (tmp_path / "pkg" / f"_json{suffix}").write_bytes(compiled.read_bytes())
    hook = pyinstaller.HOOKS / pyinstaller.SPLIT_HOOK
    code = (
        f"import sys; sys._MEIPASS = {str(tmp_path)!r}\n"
        f"sys.path.insert(0, {str(tmp_path / 'base_library.zip')!r})\n"
        f"exec(open({str(hook)!r}).read())\n"
        "import pkg.pure, pkg._json\n"
        "print(pkg.pure.__file__); print(pkg._json.__file__)\n"
        "try:\n    import pkg.absent\nexcept ModuleNotFoundError as e:\n    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        str(tmp_path / "base_library.zip" / "pkg" / "pure.py"),
        str(tmp_path / "pkg" / f"_json{suffix}"),
        "No module named 'pkg.absent'",
    ]


def test_finish_is_reproducible(tmp_path: Path) -> None:
    a = make_onedir(tmp_path / "a")
    b = make_onedir(tmp_path / "b")
    pyinstaller.finish(a)
    pyinstaller.finish(b)
    assert (a / pyinstaller.LIBRARY_ZIP).read_bytes() == (b / pyinstaller.LIBRARY_ZIP).read_bytes()
