"""Fixtures of the unit tests."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    """benchmarks/compare.py, loaded as a module (it is a script, not a package member)."""
    spec = importlib.util.spec_from_file_location("benchmarks_compare", ROOT / "benchmarks" / "compare.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
