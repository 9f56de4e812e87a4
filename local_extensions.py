"""Every answer to the template's questions is read here, once, into its canonical value.

cookiecutter.json gives each prompt a private twin rendered through the `canonical` filter,
e.g. `"__message_count": "{{ cookiecutter.message_count | canonical('message_count') }}"`,
and the project's files render only the twins. cookiecutter renders private variables with
the answers, before it creates the project folder, so an answer refused here leaves nothing
on disk whatever it holds (a slug such as `a/b` or `..` would otherwise name that folder).

The slug and the broker are taken exactly as typed: the slug names the folder before any
file is rendered, and a broker is a word, so a padded one is refused rather than guessed.
Their twins equal the answers, and the files may use either.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Callable
from decimal import Decimal

import click
from jinja2 import Environment
from jinja2.ext import Extension


class RefusedAnswer(click.ClickException):
    """An answer with no canonical value.

    A click error, because cookiecutter's command line runs in click: click reports it as
    one line on stderr (`Error: <message>`) and exits with status 1, and a caller of
    `cookiecutter.main.cookiecutter` gets an ordinary exception.
    """

    def __init__(self, prompt: str, value: object, allowed: str) -> None:
        # repr quotes the value and escapes control characters, so the line is one line
        # and shows what was typed, spaces included.
        super().__init__(f"{prompt} is {value!r}; it must be {allowed}.")
        self.prompt = prompt
        self.value = value


# The project name is also a line of main.py (`TITLE = "..."`), held to 100 columns by the
# bake's own ruff check: 40 characters fit even when each is a wide or an escaped one.
NAME_LENGTH = 40
# The slug's longest line in the bake is `from <slug>.gc_tuning import ...`, 66 columns
# without it; ruff's format check would rewrap it beyond 100.
SLUG_LENGTH = 30
SLUG = re.compile(r"[a-z]([a-z0-9_]*[a-z0-9])?")
# Names a baked package must not take: it would shadow the module of that name for the app
# (the standard library, the app's dependencies with theirs), for its tests (their tools
# and helper modules) or for its tools.
TAKEN = set(sys.stdlib_module_names) | {
    # pyproject.toml's dependencies and what they install.
    "annotated_types",
    "anyio",
    "click",
    "dotenv",
    "fastapi",
    "h11",
    "httptools",
    "idna",
    "jinja2",
    "jwt",
    "markupsafe",
    "prometheus_client",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "redis",
    "starlette",
    "typing_extensions",
    "typing_inspection",
    "uvicorn",
    "uvloop",
    "watchfiles",
    "websockets",
    "yaml",
    # The test extra, and the tests' own modules.
    "httpcore",
    "httpx",
    "httpx_sse",
    "hypothesis",
    "playwright",
    "pytest",
    "ruff",
    "schemathesis",
    "conftest",
    "redis_server",
    "sse_client",
    "uvicorn_process",
    "test",
    "tests",
}
BROKERS = ("memory", "redis")
COUNT = re.compile(r"[0-9]+")
SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")
# Intervals are kept to microseconds, so the decimal the README shows is exactly the float
# the settings hold (at most 4 + 6 digits, well within a float's 15).
MICROSECOND = Decimal("0.000001")


def line_of_text(limit: int | None = None) -> Callable[[str], str]:
    allowed = "one line of printable text, not empty"
    if limit is not None:
        allowed += f", at most {limit} characters"

    def parse(value: str) -> str:
        text = value.strip()
        if not text or not text.isprintable() or (limit is not None and len(text) > limit):
            raise ValueError(allowed)
        return text

    return parse


def package_name(value: str) -> str:
    if not SLUG.fullmatch(value) or len(value) > SLUG_LENGTH or keyword.iskeyword(value):
        raise ValueError(
            f"a Python package name of at most {SLUG_LENGTH} characters: lower-case letters, "
            "digits and underscores, starting with a letter and not ending with an "
            "underscore, not a Python keyword"
        )
    if value in TAKEN:
        raise ValueError("a name that does not shadow a standard or dependency module")
    return value


def message_count(value: str) -> str:
    digits = value.strip()
    # Checked for length before int(), which refuses strings of thousands of digits.
    if COUNT.fullmatch(digits) and len(digits.lstrip("0")) <= 7:
        count = int(digits)
        if 1 <= count <= 1_000_000:
            return str(count)
    raise ValueError("a whole number from 1 to 1,000,000")


def seconds(value: str) -> str:
    text = value.strip()
    if SECONDS.fullmatch(text):
        interval = Decimal(text)
        if interval <= 3600 and interval == interval.quantize(MICROSECOND):
            # Shortest exact decimal, always with a point: it is also a float literal.
            shortest = format(interval.normalize(), "f")
            return shortest if "." in shortest else f"{shortest}.0"
    raise ValueError("a number of seconds from 0 to 3,600 with at most 6 decimals")


def broker(value: str) -> str:
    if value not in BROKERS:
        raise ValueError(" or ".join(BROKERS))
    return value


PARSERS: dict[str, Callable[[str], str]] = {
    "project_name": line_of_text(NAME_LENGTH),
    "project_slug": package_name,
    "description": line_of_text(),
    "author_name": line_of_text(),
    "message_count": message_count,
    "message_interval": seconds,
    "broker": broker,
}


def canonical(value: object, prompt: str) -> str:
    """The canonical text of one answer, or RefusedAnswer.

    The value is what cookiecutter hands over: the typed text, or with --no-input the
    KEY=VALUE text after cookiecutter rendered it as a template (which is how one answer
    may refer to another). Called from Python, it may also be None or a bool.
    """
    if not isinstance(value, str):
        raise RefusedAnswer(prompt, value, "text")
    try:
        return PARSERS[prompt](value)
    except ValueError as refused:
        raise RefusedAnswer(prompt, value, str(refused)) from None


def toml_string(text: str) -> str:
    """A TOML basic string holding `text`.

    Canonical text is printable, so only quotes and backslashes are escaped and the
    characters themselves are kept (Jinja's tojson writes a character beyond U+FFFF as two
    surrogate escapes, which TOML refuses).
    """
    return json.dumps(text, ensure_ascii=False)


def python_string(text: str) -> str:
    """A Python string literal holding `text`, quoted as `ruff format` would quote it.

    Double quotes unless the text holds more of them than single quotes, as ruff prefers;
    tojson would write `"` as an escape ruff rewrites, and a character beyond U+FFFF as two
    surrogate escapes, which Python reads as two broken characters.
    """
    quote = "'" if text.count('"') > text.count("'") else '"'
    body = text.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return f"{quote}{body}{quote}"


class Answers(Extension):
    """The filters cookiecutter.json and the project's files use on the answers."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["canonical"] = canonical
        environment.filters["toml_string"] = toml_string
        environment.filters["python_string"] = python_string
