"""Settings come from SSE_ variables; a bad one stops the app with a readable message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from {{ cookiecutter.project_slug }}.settings import Settings, load_settings


def test_defaults_are_the_baked_answers():
    settings = Settings()
    assert settings.message_count == {{ cookiecutter.__message_count }}
    assert settings.message_interval == {{ cookiecutter.__message_interval }}
    assert settings.heartbeat_interval == 15
    assert settings.retry_ms == 3000


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SSE_MESSAGE_COUNT", "7")
    monkeypatch.setenv("SSE_MESSAGE_INTERVAL", "0.5")
    assert (Settings().message_count, Settings().message_interval) == (7, 0.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SSE_MESSAGE_COUNT", "0"),
        ("SSE_MESSAGE_COUNT", "many"),
        ("SSE_MESSAGE_INTERVAL", "-1"),
        ("SSE_HEARTBEAT_INTERVAL", "0"),
        ("SSE_RETRY_MS", "-5"),
    ],
)
def test_bad_values_exit_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert name in str(exited.value)
    assert repr(value) in str(exited.value)


def test_the_app_does_not_start_with_a_bad_value():
    result = subprocess.run(
        [sys.executable, "-c", "import {{ cookiecutter.project_slug }}.main"],
        env={**os.environ, "SSE_MESSAGE_COUNT": "zero"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Invalid settings: SSE_MESSAGE_COUNT='zero'" in result.stderr
