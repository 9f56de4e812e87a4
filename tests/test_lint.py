"""The template's own Python (hooks, tests, benchmarks) is ruff-clean, as each bake is."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import TEMPLATE


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_passes_on_the_template(command: list[str]):
    ruff = shutil.which("ruff")
    assert ruff, "ruff is missing: pip install -r requirements-dev.txt"
    result = subprocess.run(
        [ruff, *command], cwd=TEMPLATE, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
