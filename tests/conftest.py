"""Shared paths and helpers for the unit and integration tiers."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
IMAGES = FIXTURES / "images"
DIGITS = FIXTURES / "digits"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load_testbeds() -> ModuleType:
    """scripts/testbeds.py (a script, not a package module) as the module ``testbeds``."""
    if "testbeds" in sys.modules:
        return sys.modules["testbeds"]
    spec = importlib.util.spec_from_file_location("testbeds", ROOT / "scripts" / "testbeds.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
