"""The runtime (frozen into every binary) must not pull in the builder, Click or anything heavy."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

RUNTIME = ROOT / "edgebundle" / "runtime"
ALLOWED_THIRD_PARTY = {"numpy", "PIL", "tflite_runtime", "ai_edge_litert"}


def _runtime_modules() -> list[Path]:
    return sorted(RUNTIME.rglob("*.py"))


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The absolute name a ``from`` import refers to, relative ones resolved against ``path``'s
    package (edgebundle.runtime...), so that ``from ..errors import`` is seen as edgebundle.errors."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if node.level > 1:
        package = package[: -(node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def test_runtime_imports_only_stdlib_numpy_pillow_interpreters_and_itself() -> None:
    for path in _runtime_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [_absolute(path, node)]
            else:
                continue
            for name in names:
                if name == "edgebundle.runtime" or name.startswith("edgebundle.runtime."):
                    continue  # the runtime's own modules
                top = name.split(".")[0]
                assert top in ALLOWED_THIRD_PARTY or top in sys.stdlib_module_names, (
                    f"{path.relative_to(RUNTIME)}: imports {name}"
                )


def test_a_relative_import_out_of_the_runtime_is_resolved() -> None:
    path = RUNTIME / "app.py"
    (node,) = ast.parse("from ..errors import ConfigError").body
    assert isinstance(node, ast.ImportFrom)
    assert _absolute(path, node) == "edgebundle.errors"
    (node,) = ast.parse("from .payload import Bundle").body
    assert isinstance(node, ast.ImportFrom)
    assert _absolute(path, node) == "edgebundle.runtime.payload"


def _module_names(package: str) -> list[str]:
    """Every module of the runtime, as ``package.name`` (its __init__ as ``package``)."""
    names = []
    for path in _runtime_modules():
        parts = path.relative_to(RUNTIME).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join([package, *parts]))
    return names


def test_importing_the_runtime_as_shipped_loads_no_builder_module(tmp_path: Path) -> None:
    # As in a binary: the runtime copied to a top-level package ``ebrt``, every module imported.
    shutil.copytree(RUNTIME, tmp_path / "ebrt", ignore=shutil.ignore_patterns("__pycache__"))
    code = f"import sys, json, {', '.join(_module_names('ebrt'))}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    modules = json.loads(out.stdout)
    assert "click" not in modules
    assert not [m for m in modules if m == "edgebundle" or m.startswith("edgebundle.")]
    assert "numpy" in modules
    assert "PIL.Image" in modules


def test_the_detection_decoders_load_only_in_detection_binaries(tmp_path: Path) -> None:
    # Every other runtime module imported: none of them pulls the decoders in (Session imports them
    # when the recipe's decoder is a detection one), so classification binaries start as before.
    shutil.copytree(RUNTIME, tmp_path / "ebrt", ignore=shutil.ignore_patterns("__pycache__"))
    lazy = ("ebrt.detection", "ebrt.anchors", "ebrt.annotate")
    others = [m for m in _module_names("ebrt") if m not in lazy]
    code = f"import sys, json, {', '.join(others)}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True, env={}
    )
    modules = json.loads(out.stdout)
    assert "ebrt.session" in modules
    assert "ebrt.detection" not in modules
    assert "ebrt.anchors" not in modules
    # --annotate's drawing too, only when asked for
    assert "ebrt.annotate" not in modules
    assert "PIL.ImageDraw" not in modules


def test_only_the_builder_side_needs_numpy(tmp_path: Path) -> None:
    # Binaries of LiteRT's C API leave NumPy out: every module a binary runs, the detection decoders
    # too, must import, and stay, without it (model.py imports it only for the Python APIs).
    shutil.copytree(RUNTIME, tmp_path / "ebrt", ignore=shutil.ignore_patterns("__pycache__"))
    numpy_users = ("ebrt.buildtime",)
    others = [m for m in _module_names("ebrt") if m not in numpy_users]
    code = (
        "import sys; sys.modules['numpy'] = None\n"  # any import of NumPy fails
        f"import json, {', '.join(others)}; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False, env={}
    )
    assert out.returncode == 0, out.stderr
    assert {"ebrt.session", "ebrt.detection"} <= set(json.loads(out.stdout))


def test_importing_edgebundle_runtime_from_the_builder_package_loads_no_click() -> None:
    code = f"import sys, {', '.join(_module_names('edgebundle.runtime'))}; print('click' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# The serving modes' own modules: the image modes (APP IMAGE, --self-test, --info) must load none.
SERVING_MODULES = {
    "serve",
    "connection",
    "http1",
    "metrics",
    "jsonlog",
    "sdnotify",
    "batch",
    "workers",
    "shared",
    "supervisor",
}


def _image_mode_modules() -> list[str]:
    """What app.py imports, at the top or inside its functions, but for the serving modes' entries
    and what only the type checker reads."""
    tree = ast.parse((RUNTIME / "app.py").read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in ast.walk(block)
    }
    names = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.level == 1
        and node.module
        and id(node) not in typing_only
    }
    return sorted(names - {"serve", "batch"})


def test_the_image_modes_load_no_serving_module(tmp_path: Path) -> None:
    # As in a binary: the image modes' whole import path; asyncio alone costs ~50 ms of start-up.
    shutil.copytree(RUNTIME, tmp_path / "ebrt", ignore=shutil.ignore_patterns("__pycache__"))
    imported = ["ebrt.app", *(f"ebrt.{name}" for name in _image_mode_modules())]
    assert "ebrt.session" in imported
    code = f"import sys, json, {', '.join(imported)}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True, env={}
    )
    modules = set(json.loads(out.stdout))
    assert not modules & {f"ebrt.{name}" for name in SERVING_MODULES}
    assert "asyncio" not in modules
    assert "ebrt.manifest" not in modules  # types for the type checker: a binary never loads them
