"""Check every answer before anything is written.

A bad answer stops the bake with exit status 1 and one line that names the prompt, the
value given and what is allowed; cookiecutter then removes the half-made folder.
"""

from __future__ import annotations

import json
import keyword
import math
import re
import sys

# cookiecutter renders this file first; the raw string then holds every answer as JSON.
ANSWERS: dict[str, object] = json.loads(r"""{{ cookiecutter | tojson }}""")

SLUG = re.compile(r"[a-z][a-z0-9_]*\Z")
# Names a baked package must not take: it would shadow the module of that name.
TAKEN = set(sys.stdlib_module_names) | {
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "pydantic_settings",
    "jinja2",
    "httpx",
    "httpx_sse",
    "playwright",
    "redis",
    "tests",
    "test",
}


def check_text(value: str) -> str | None:
    if not value.strip():
        return "a non-empty line of text"
    if any(ord(ch) < 32 for ch in value):
        return "one line of text, without control characters"
    return None


def check_slug(value: str) -> str | None:
    if not SLUG.match(value) or keyword.iskeyword(value):
        return (
            "a Python package name: lower-case letters, digits and underscores, "
            "starting with a letter, not a Python keyword"
        )
    if value in TAKEN:
        return "a name that does not shadow a standard or dependency module"
    return None


def check_count(value: str) -> str | None:
    allowed = "a whole number from 1 to 1,000,000"
    try:
        count = int(value)
    except ValueError:
        return allowed
    return None if 1 <= count <= 1_000_000 else allowed


def check_interval(value: str) -> str | None:
    allowed = "a number of seconds from 0 to 3,600"
    try:
        interval = float(value)
    except ValueError:
        return allowed
    return None if math.isfinite(interval) and 0 <= interval <= 3600 else allowed


BROKERS = ("memory", "redis")


def check_broker(value: str) -> str | None:
    # Compared as given, not stripped: the bake tests the exact answer to pick its files.
    if str(ANSWERS.get("broker", "")) not in BROKERS:
        return " or ".join(BROKERS)
    return None


CHECKS = {
    "project_name": check_text,
    "project_slug": check_slug,
    "description": check_text,
    "author_name": check_text,
    "message_count": check_count,
    "message_interval": check_interval,
    "broker": check_broker,
}


def main() -> int:
    for prompt, check in CHECKS.items():
        value = str(ANSWERS.get(prompt, "")).strip()
        allowed = check(value)
        if allowed is not None:
            print(f"ERROR: {prompt} is {value!r}; it must be {allowed}.", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
