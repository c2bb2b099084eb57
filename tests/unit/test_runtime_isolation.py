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


def test_runtime_imports_only_stdlib_numpy_pillow_and_interpreters() -> None:
    for path in RUNTIME.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the runtime
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED_THIRD_PARTY or top in sys.stdlib_module_names, (
                    f"{path.name}: imports {name}"
                )


def test_importing_the_runtime_as_shipped_loads_no_builder_module(tmp_path: Path) -> None:
    # As in a binary: the runtime copied to a top-level package ``ebrt``, everything imported.
    shutil.copytree(RUNTIME, tmp_path / "ebrt", ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import sys, json, ebrt.app, ebrt.session, ebrt.model, ebrt.preprocess, ebrt.postprocess;"
        "print(json.dumps(sorted(sys.modules)))"
    )
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
    # the detection decoders are imported by detection binaries only (Session, when the decoder is one)
    assert "ebrt.detection" not in modules
    assert "ebrt.anchors" not in modules


def test_importing_edgebundle_runtime_from_the_builder_package_loads_no_click() -> None:
    code = "import sys, edgebundle.runtime.app, edgebundle.runtime.session; print('click' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
