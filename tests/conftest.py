"""Shared helpers for the template's own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def template_dir() -> Path:
    return TEMPLATE
