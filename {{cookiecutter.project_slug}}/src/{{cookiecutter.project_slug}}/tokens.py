"""Mint a subscriber token, for operators and tests:

    python -m {{ cookiecutter.project_slug }}.tokens alice --channels 'private.team-*'

Signs with SSE_AUTH_SECRET from the environment and prints the token. A token for
`alice` reads `user.alice`; each `--channels` pattern (an exact name or a prefix ending
in `*`) grants the `private.*` channels it matches.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence

from .auth import mint
from .settings import secret_problem

CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}\*?|[A-Za-z0-9_.-]{0,63}\*")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m {{ cookiecutter.project_slug }}.tokens",
        description="Print a subscriber token signed with SSE_AUTH_SECRET.",
    )
    parser.add_argument("sub", help="who the token is for: it reads user.<sub>")
    parser.add_argument(
        "--channels",
        nargs="*",
        default=[],
        metavar="PATTERN",
        help="channels it grants: exact names, or prefixes ending in * (quote them)",
    )
    parser.add_argument(
        "--ttl", type=int, default=3600, help="seconds until it expires (default 3600)"
    )
    args = parser.parse_args(argv)
    secret = os.environ.get("SSE_AUTH_SECRET")
    if not secret:
        return fail("SSE_AUTH_SECRET is not set: export the service's secret first")
    if (problem := secret_problem(secret)) is not None:
        return fail(f"SSE_AUTH_SECRET {problem}")
    if not args.sub.strip():
        return fail("the subject must not be empty")
    if args.ttl < 1:
        return fail(f"--ttl must be at least 1 second (got {args.ttl})")
    bad = [pattern for pattern in args.channels if not CHANNEL_PATTERN.fullmatch(pattern)]
    if bad:
        return fail(f"not a channel name or prefix*: {', '.join(map(repr, bad))}")
    print(mint(secret.encode(), args.sub, ttl=args.ttl, now=time.time(), channels=args.channels))
    return 0


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
