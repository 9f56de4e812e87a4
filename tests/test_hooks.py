"""A bad answer stops the bake: exit 1, one readable line, and no output folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEMPLATE


def bake_cli(tmp_path: Path, *answers: str) -> subprocess.CompletedProcess[str]:
    """Run cookiecutter the way a user does, answering with KEY=VALUE arguments."""
    out = tmp_path / "out"
    out.mkdir()
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            str(TEMPLATE),
            "-o",
            str(out),
            *answers,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


BAD_ANSWERS = [
    ("project_slug", "2fast", "Python package name"),
    ("project_slug", "my-app", "Python package name"),
    ("project_slug", "class", "Python package name"),
    ("project_slug", "Has_Caps", "Python package name"),
    ("project_slug", "asyncio", "does not shadow"),
    ("project_slug", "fastapi", "does not shadow"),
    ("message_count", "0", "whole number from 1 to 1,000,000"),
    ("message_count", "1000001", "whole number from 1 to 1,000,000"),
    ("message_count", "2.5", "whole number from 1 to 1,000,000"),
    ("message_count", "five", "whole number from 1 to 1,000,000"),
    ("message_interval", "-0.1", "number of seconds from 0 to 3,600"),
    ("message_interval", "3600.5", "number of seconds from 0 to 3,600"),
    ("message_interval", "nan", "number of seconds from 0 to 3,600"),
    ("message_interval", "soon", "number of seconds from 0 to 3,600"),
    ("project_name", " ", "non-empty"),
    ("description", "two\nlines", "one line"),
    ("author_name", "", "non-empty"),
    ("broker", "kafka", "memory or redis"),
    ("broker", "Redis", "memory or redis"),
]


@pytest.mark.parametrize(("prompt", "value", "allowed"), BAD_ANSWERS)
def test_bad_answer_is_rejected(tmp_path: Path, prompt: str, value: str, allowed: str):
    result = bake_cli(tmp_path, f"{prompt}={value}")
    assert result.returncode == 1
    # Our line is all of stderr (cookiecutter logs its own traceback to stdout).
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ERROR: {prompt} is {value.strip()!r}")
    assert allowed in lines[0]
    assert list((tmp_path / "out").iterdir()) == [], "a failed bake must leave nothing behind"


@pytest.mark.parametrize(
    ("prompt", "value"),
    [
        ("message_count", "1"),
        ("message_count", "1000000"),
        ("message_interval", "0"),
        ("message_interval", "3600"),
        ("project_slug", "stream_2"),
        ("broker", "memory"),
        ("broker", "redis"),
    ],
)
def test_edge_answers_are_accepted(tmp_path: Path, prompt: str, value: str):
    result = bake_cli(tmp_path, f"{prompt}={value}")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").iterdir())) == 1


@pytest.mark.parametrize(
    ("name", "slug"),
    [("SSE Demo", "sse_demo"), ("TCP/IP Feed", "tcp_ip_feed"), ("Über Café", "uber_cafe")],
)
def test_the_default_slug_is_a_package_name_for_any_project_name(
    tmp_path: Path, name: str, slug: str
):
    result = bake_cli(tmp_path, f"project_name={name}")
    assert result.returncode == 0, result.stderr
    assert [path.name for path in (tmp_path / "out").iterdir()] == [slug]
