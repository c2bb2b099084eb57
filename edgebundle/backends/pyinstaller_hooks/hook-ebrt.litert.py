"""PyInstaller hook: edgebundle's LiteRT binding (runtime/litert.py) loads the ai-edge-litert wheel's
libLiteRt.so with ctypes from ``ai_edge_litert/`` under a sys.path entry: carry that library alone (not
the package: its Python side imports NumPy, its other libraries are GPU/NPU accelerators)."""

import os

from PyInstaller.utils.hooks import get_package_paths

_, _package = get_package_paths("ai_edge_litert")
binaries = [(os.path.join(_package, "libLiteRt.so"), "ai_edge_litert")]
