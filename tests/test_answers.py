"""Every answer is read once into its canonical value, or refused before anything is written.

The rules live in local_extensions.py: cookiecutter.json renders each answer through its
`canonical` filter into a private twin, and the project's files render only the twins.
These tests bake the way a user does, through cookiecutter's command line (run in-process by
click's test runner, which keeps stdout and stderr apart), and read what the bake holds.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from cookiecutter import cli
from cookiecutter.prompt import render_variable
from cookiecutter.utils import create_env_with_context
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from local_extensions import RefusedAnswer, canonical

from conftest import TEMPLATE

CONTEXT = json.loads((TEMPLATE / "cookiecutter.json").read_text())
# The prompts, in the order cookiecutter asks them (and checks their answers).
PROMPTS = [key for key in CONTEXT if not key.startswith("_")]
# Prompts whose canonical value may differ from the answer: the files must use the twin.
NORMALIZED = ["project_name", "description", "author_name", "message_count", "message_interval"]


@dataclass
class Bake:
    exit_code: int
    stderr: str
    output: Path  # the folder given to -o; the project is the one folder inside it

    @property
    def project(self) -> Path:
        (project,) = self.output.iterdir()
        return project


def bake(where: Path, answers: dict[str, str]) -> Bake:
    """`cookiecutter --no-input TEMPLATE -o where/out KEY=VALUE...`, in this process."""
    config = where / "config.yaml"
    # Keeps cookiecutter's replay files and clones out of the home directory.
    config.write_text(f"cookiecutters_dir: {where / 'cc'}\nreplay_dir: {where / 'replay'}\n")
    output = where / "out"
    output.mkdir()
    args = ["--no-input", "--config-file", str(config), str(TEMPLATE), "-o", str(output)]
    args += [f"{prompt}={value}" for prompt, value in answers.items()]
    # The command line points cookiecutter's logger at the runner's stdout; give it back.
    logger = logging.getLogger("cookiecutter")
    handlers, level = logger.handlers[:], logger.level
    try:
        result = CliRunner().invoke(cli.main, args)
    finally:
        logger.handlers[:], logger.level = handlers, level
    # A crash is not a refusal: only click's own exit (status 0 or 1) is an answer.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return Bake(result.exit_code, result.stderr, output)


def handed_over(answers: dict[str, str]) -> dict[str, object]:
    """What cookiecutter hands to the checks for each prompt: the answer (rendered, as
    --no-input renders every KEY=VALUE) or the rendered default."""
    context = {"cookiecutter": {"_extensions": CONTEXT["_extensions"]}}
    env = create_env_with_context(context)
    seen: dict[str, object] = {}
    for prompt in PROMPTS:
        seen[prompt] = render_variable(env, answers.get(prompt, CONTEXT[prompt]), seen)
    return seen


def refusal(seen: dict[str, object]) -> RefusedAnswer | None:
    """The first answer, in prompt order, the checks refuse."""
    for prompt in PROMPTS:
        try:
            canonical(seen[prompt], prompt)
        except RefusedAnswer as refused:
            return refused
    return None


def assert_refused(result: Bake, prompt: str, value: object) -> str:
    assert result.exit_code == 1
    assert list(result.output.iterdir()) == [], "a refused answer must leave nothing behind"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {prompt} is {value!r}; it must be "), lines[0]
    return lines[0]


def load_settings(project: Path):
    """The baked settings module, loaded on its own (no import of the baked package, whose
    name may be any accepted slug, `cookiecutter` or `slugify` say, already imported here)."""
    path = next(project.glob("src/*/settings.py"))
    name = f"baked_settings_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs: pydantic resolves the model's annotations through it.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module.Settings


def title(project: Path) -> object:
    """The value main.py gives TITLE, read from its source."""
    tree = ast.parse(next(project.glob("src/*/main.py")).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["TITLE"]:
            return ast.literal_eval(node.value)
    raise AssertionError("main.py has no TITLE")


def assert_holds_canonical(project: Path, seen: dict[str, object]) -> None:
    """The bake holds each answer's canonical value wherever it uses that answer."""
    want = {prompt: canonical(seen[prompt], prompt) for prompt in PROMPTS}
    name, count, interval = want["project_name"], want["message_count"], want["message_interval"]
    assert project.name == want["project_slug"]
    readme = (project / "README.md").read_text(encoding="utf-8").splitlines()
    assert readme[0] == f"# {name}"
    assert want["description"] in readme[:5]
    table = "\n".join(readme)
    assert re.findall(r"^\| `SSE_MESSAGE_COUNT` \| `([^`]*)` \|", table, re.M) == [count]
    assert re.findall(r"^\| `SSE_MESSAGE_INTERVAL` \| `([^`]*)` \|", table, re.M) == [interval]
    assert title(project) == name
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["name"] == want["project_slug"].replace("_", "-")
    assert pyproject["project"]["description"] == want["description"]
    assert pyproject["project"]["authors"] == [{"name": want["author_name"]}]
    fields = load_settings(project).model_fields
    assert fields["message_count"].default == int(count)
    assert type(fields["message_interval"].default) is float
    assert fields["message_interval"].default == float(interval)
    assert ("redis_url" in fields) == (want["broker"] == "redis")
    for path in project.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


# --- The rules, one answer at a time --------------------------------------------------

REFUSED = [
    ("project_slug", "2fast", "Python package name"),
    ("project_slug", "my-app", "Python package name"),
    ("project_slug", "class", "Python package name"),
    ("project_slug", "Has_Caps", "Python package name"),
    ("project_slug", "trailing_", "not ending with an underscore"),
    ("project_slug", " sse_demo", "Python package name"),
    ("project_slug", "a" * 31, "at most 30 characters"),
    ("project_slug", "a/b", "Python package name"),
    ("project_slug", "..", "Python package name"),
    ("project_slug", "/tmp/absolute", "Python package name"),
    ("project_slug", "", "Python package name"),
    ("project_slug", "x" * 5000, "Python package name"),
    ("project_slug", "café", "Python package name"),
    ("project_slug", "a\x00b", "Python package name"),
    ("project_slug", "asyncio", "does not shadow"),
    ("project_slug", "fastapi", "does not shadow"),
    ("project_slug", "click", "does not shadow"),
    ("project_slug", "sse_client", "does not shadow"),
    ("message_count", "0", "whole number from 1 to 1,000,000"),
    ("message_count", "1000001", "whole number from 1 to 1,000,000"),
    ("message_count", "2.5", "whole number from 1 to 1,000,000"),
    ("message_count", "five", "whole number from 1 to 1,000,000"),
    ("message_count", "+5", "whole number from 1 to 1,000,000"),
    ("message_count", "1_000", "whole number from 1 to 1,000,000"),
    ("message_count", "\u0667", "whole number from 1 to 1,000,000"),  # an Arabic-Indic 7
    ("message_count", "9" * 5000, "whole number from 1 to 1,000,000"),
    ("message_interval", "-0.1", "number of seconds from 0 to 3,600"),
    ("message_interval", "3600.5", "number of seconds from 0 to 3,600"),
    ("message_interval", "nan", "number of seconds from 0 to 3,600"),
    ("message_interval", "inf", "number of seconds from 0 to 3,600"),
    ("message_interval", "1e-3", "number of seconds from 0 to 3,600"),
    ("message_interval", "0.0000001", "at most 6 decimals"),
    ("message_interval", "1,5", "number of seconds from 0 to 3,600"),
    ("message_interval", "soon", "number of seconds from 0 to 3,600"),
    ("project_name", " ", "not empty"),
    ("project_name", "N" * 41, "at most 40 characters"),
    ("project_name", "tab\tinside", "printable"),
    ("description", "two\nlines", "one line"),
    ("description", "bell\x07", "printable"),
    ("description", "line\u2028separator", "printable"),
    ("author_name", "", "not empty"),
    ("author_name", "zero\u200bwidth", "printable"),
    ("broker", "kafka", "memory or redis"),
    ("broker", "Redis", "memory or redis"),
    ("broker", " redis", "memory or redis"),
    ("broker", "redis\n", "memory or redis"),
]


@pytest.mark.parametrize(("prompt", "value", "allowed"), REFUSED)
def test_a_bad_answer_is_refused_and_leaves_nothing(
    tmp_path: Path, prompt: str, value: str, allowed: str
):
    result = bake(tmp_path, {prompt: value})
    line = assert_refused(result, prompt, value)
    assert allowed in line
    # Nothing beside the output folder either (a slug such as `..` or an absolute path
    # would name a folder outside it).
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.yaml", "out"]
    assert not Path("/tmp/absolute").exists()


CANONICAL = [
    ("message_count", " 7", "7"),
    ("message_count", "007\n", "7"),
    ("message_count", "1000000", "1000000"),
    ("message_interval", " 0.5", "0.5"),
    ("message_interval", "0.50", "0.5"),
    ("message_interval", ".25", "0.25"),
    ("message_interval", "2.", "2.0"),
    ("message_interval", "0", "0.0"),
    ("message_interval", "3600", "3600.0"),
    ("message_interval", "1.000000", "1.0"),
    ("message_interval", "0.000001", "0.000001"),
    ("message_interval", "0.0000010", "0.000001"),
    ("project_name", "  Spaced Out  ", "Spaced Out"),
    ("project_name", "N" * 40, "N" * 40),
    ("description", '\tQuotes "and" a backslash \\ and 😀\n', 'Quotes "and" a backslash \\ and 😀'),
    ("author_name", " Ada O'Brien ", "Ada O'Brien"),
    ("project_slug", "stream_2", "stream_2"),
    ("project_slug", "a" * 30, "a" * 30),
    ("broker", "redis", "redis"),
]


@pytest.mark.parametrize(("prompt", "value", "expected"), CANONICAL)
def test_an_answer_bakes_as_its_canonical_value(
    tmp_path: Path, prompt: str, value: str, expected: str
):
    result = bake(tmp_path, {prompt: value})
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    seen = handed_over({prompt: value})
    assert canonical(seen[prompt], prompt) == expected
    assert_holds_canonical(result.project, seen)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("SSE Demo", "sse_demo"),
        ("TCP/IP Feed", "tcp_ip_feed"),
        ("Über Café", "uber_cafe"),
        ("A name long enough to be cut off short", "a_name_long_enough_to_be_cut_o"),
    ],
)
def test_the_default_slug_is_a_package_name_for_any_project_name(
    tmp_path: Path, name: str, slug: str
):
    result = bake(tmp_path, {"project_name": name})
    assert result.exit_code == 0, result.stderr
    assert result.project.name == slug


def test_the_project_files_read_only_canonical_answers():
    """No file of the project renders an answer that the checks may normalize: only its
    `__` twin, so a padded or re-spelled answer cannot reach the bake."""
    raw = re.compile(rf"cookiecutter\.({'|'.join(NORMALIZED)})\b")
    project = TEMPLATE / "{{cookiecutter.project_slug}}"
    uses = [
        f"{path.relative_to(TEMPLATE)}:{number}: {line.strip()}"
        for path in sorted(project.rglob("*"))
        if path.is_file()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if raw.search(line)
    ]
    assert uses == []


@pytest.mark.parametrize(
    ("answer", "shown"), [("project_slug=a/b", "'a/b'"), ("broker= redis", "' redis'")]
)
def test_a_refusal_from_a_shell_is_one_line_and_leaves_no_folder(
    tmp_path: Path, answer: str, shown: str
):
    """The issue's two reports, exactly as a user runs them: `a/` was left behind, and a
    padded broker was shown stripped."""
    config = tmp_path / "config.yaml"
    config.write_text(f"replay_dir: {tmp_path / 'replay'}\n")
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "cookiecutter", "--no-input", "--config-file", str(config)]
    result = subprocess.run(
        [*command, str(TEMPLATE), "-o", str(out), answer],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert list(out.iterdir()) == []
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f" is {shown}; it must be " in lines[0]
    assert lines[0].startswith("Error: ")


BROKERS = ("memory", "redis")
WORST_NAMES = ["界" * 40, "\\" * 40, '"' * 40, "'" * 20 + '"' * 20, 'It\'s "quoted" 😀']


def test_the_longest_answers_still_bake_a_lint_clean_project(tmp_path: Path):
    """The length limits are what the bake's own `ruff check` and `ruff format --check`
    allow: a 40-character name of wide or escaped characters, a 30-character slug."""
    ruff = shutil.which("ruff")
    assert ruff, "ruff is missing: pip install -r requirements-dev.txt"
    for number, name in enumerate(WORST_NAMES):
        where = tmp_path / str(number)
        where.mkdir()
        answers = {"project_name": name, "project_slug": f"s{number}" + "x" * 28}
        # The Redis bake has lines of its own with the slug in them.
        answers["broker"] = BROKERS[number % 2]
        result = bake(where, answers)
        assert result.exit_code == 0, result.stderr
        assert_holds_canonical(result.project, handed_over(answers))
    projects = [str(path) for path in tmp_path.glob("*/out/*")]
    for command in (["check"], ["format", "--check"]):
        lint = subprocess.run(
            [ruff, *command, "--no-cache", *projects],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_baked_package_imports_with_unusual_answers(tmp_path: Path):
    answers = {
        "project_name": ' Über "Live" Feed 😀 ',
        "project_slug": "live_feed",
        "message_count": " 07",
        "message_interval": " .50",
        "broker": "redis",
    }
    result = bake(tmp_path, answers)
    assert result.exit_code == 0, result.stderr
    probe = (
        "import sys; sys.path.insert(0, 'src'); "
        "from live_feed import main, settings; s = settings.Settings(); "
        "print(repr((main.TITLE, s.message_count, s.message_interval)))"
    )
    env_free = {"PATH": "/usr/bin:/bin"}  # no SSE_* variable from the caller's shell
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=result.project,
        capture_output=True,
        text=True,
        timeout=120,
        env=env_free,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == repr(('Über "Live" Feed 😀', 7, 0.5))


# --- Any answers -------------------------------------------------------------------------

JINJA = ("{{", "{%", "{#")
# --no-input renders every KEY=VALUE as a Jinja template (so one answer can name another);
# text that opens a Jinja tag is template syntax, not an answer.
ANY_TEXT = st.text(max_size=50).filter(lambda text: not any(tag in text for tag in JINJA))
PADDING = st.sampled_from(["", " ", "  ", "\t", "\n", "\r\n", "\u3000", "\x0b"])
# Paths where a slug would put the project folder; ABSOLUTE is swapped for a path inside
# the test's folder, to check that nothing appears there.
ABSOLUTE = "<absolute>"
PATHS = ["a/b", "..", "../escape", "./x", "a\\b", ABSOLUTE, "", " ", "x" * 300, "ü", "a\x00"]


def padded(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda left, text, right: left + text + right, PADDING, core, PADDING)


# Answers the rules are meant to take, each perhaps padded or re-spelled.
PRINTABLE = st.text(
    st.characters(exclude_categories=["C", "Z"], include_characters=" "), min_size=1, max_size=50
).filter(lambda text: not any(tag in text for tag in JINJA))
LIKELY = {
    "project_name": padded(st.from_regex(r"[A-Za-z][A-Za-z0-9 '\"&./\-]{0,44}", fullmatch=True)),
    "project_slug": st.from_regex(r"[a-z]([a-z0-9_]{0,27}[a-z0-9])?", fullmatch=True)
    | st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
    "description": padded(PRINTABLE),
    "author_name": padded(PRINTABLE),
    "message_count": padded(
        st.integers(min_value=-2, max_value=1_000_002).map(str)
        | st.integers(min_value=1, max_value=999).map(lambda n: f"00{n}")
    ),
    "message_interval": padded(
        st.integers(min_value=0, max_value=7)
        .flatmap(lambda places: st.decimals(min_value=-1, max_value=3601, places=places))
        .map(lambda seconds: format(seconds, "f"))
        | st.sampled_from([".5", "2.", "1.0000000", "0.0000005", "1e-3", "nan", "inf", "-0"])
    ),
    "broker": st.sampled_from(["memory", "redis", " redis", "Redis", "memory ", "kafka", ""]),
}
# Answers with no such intent: any text, and for the slug, paths.
WILD = {prompt: ANY_TEXT for prompt in PROMPTS} | {
    "project_slug": ANY_TEXT | st.sampled_from(PATHS),
}


@st.composite
def answer_sets(draw: st.DrawFn) -> dict[str, str]:
    """Each prompt left at its default, answered plausibly, or (one time in ten) answered
    with anything: enough bakes get through for their files to be checked."""
    answers = {}
    for prompt in PROMPTS:
        how = draw(st.sampled_from(["default"] * 3 + ["likely"] * 6 + ["wild"]))
        if how != "default":
            answers[prompt] = draw(LIKELY[prompt] if how == "likely" else WILD[prompt])
    return answers


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for the examples' bakes (hypothesis runs many examples per test call)."""
    yield tmp_path_factory.mktemp("answers")


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(answers=answer_sets())
@example(answers={"project_slug": "a/b"})
@example(answers={"project_slug": ABSOLUTE})
@example(answers={"project_slug": "../escape"})
@example(answers={"message_count": " 7", "message_interval": " 0.5"})
@example(answers={"broker": " redis"})
@example(answers={"project_name": "\r\n"})
def test_any_answers_bake_canonical_values_or_are_refused_leaving_nothing(
    scratch: Path, answers: dict[str, str]
):
    where = Path(tempfile.mkdtemp(dir=scratch))
    absolute = where / "absolute"
    answers = {
        prompt: str(absolute) if value == ABSOLUTE else value for prompt, value in answers.items()
    }
    seen = handed_over(answers)
    refused = refusal(seen)
    result = bake(where, answers)
    event("baked" if refused is None else f"refused: {refused.prompt}")
    if refused is None:
        assert result.exit_code == 0, result.stderr
        assert result.stderr == ""
        for prompt in ("project_name", "description", "author_name"):
            assert canonical(seen[prompt], prompt) == str(seen[prompt]).strip()
        count = str(seen["message_count"]).strip()
        assert count.isascii() and canonical(count, "message_count") == str(int(count))
        interval = canonical(seen["message_interval"], "message_interval")
        assert Decimal(interval) == Decimal(str(seen["message_interval"]).strip())
        # The float the settings hold is the decimal the README shows.
        assert Decimal(repr(float(interval))) == Decimal(interval)
        assert_holds_canonical(result.project, seen)
    else:
        line = assert_refused(result, refused.prompt, seen[refused.prompt])
        assert line == f"Error: {refused.message}"
        assert sorted(path.name for path in where.iterdir()) == ["config.yaml", "out"]
    assert not absolute.exists()
