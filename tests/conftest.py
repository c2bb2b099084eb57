"""Shared paths and helpers for the unit and integration tiers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
IMAGES = FIXTURES / "images"
DIGITS = FIXTURES / "digits"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
