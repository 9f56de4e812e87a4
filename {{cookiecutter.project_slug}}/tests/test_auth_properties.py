"""Property tests of authorize(): arbitrary tokens never grant what they do not sign.

Tokens are drawn with random claims, algorithms, secrets and channel patterns (from a
small alphabet, so that names and patterns collide often); each answer is checked
against the rules as the README states them, written out again here.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
from hypothesis import given, settings
from hypothesis import strategies as st

from {{ cookiecutter.project_slug }}.auth import Forbidden, Unauthorized, authorize

SECRET = b"the service's own secret, 64 bytes long so HS512 does not warn.."
OTHER = b"someone else's secret, just as long, that this service never saw"
NOW = time.time()

letters = st.text(alphabet="ab.-*", min_size=0, max_size=4)
channels = st.builds(
    lambda prefix, rest: prefix + rest, st.sampled_from(["user.", "private."]), letters
)
patterns = st.builds(
    lambda prefix, rest: prefix + rest, st.sampled_from(["", "user.", "private.", "priv"]), letters
)
expiries = st.one_of(
    st.integers(int(NOW) - 10**6, int(NOW) - 5),  # expired
    st.integers(int(NOW) + 60, int(NOW) + 10**8),  # valid
    st.just(10**30),
    st.sampled_from(["soon", None, 1.5e300, True]),
)
claim_sets = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.one_of(letters, st.integers(), st.none()),
        "exp": expiries,
        "channels": st.one_of(st.lists(patterns, max_size=4), patterns, st.integers()),
        "nbf": st.integers(int(NOW) - 10, int(NOW) - 5),
        "iat": st.integers(int(NOW) - 100, int(NOW) - 5),
    },
)


def b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def sign(claims: dict[str, Any], alg: str, secret: bytes) -> str:
    if alg == "none":
        header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{b64(json.dumps(claims).encode())}."
    return jwt.encode(claims, secret, algorithm=alg)


def expected(claims: dict[str, Any], alg: str, secret: bytes, channel: str) -> bool:
    """The README's rules: signed HS256 with our secret, not expired, and granting it."""
    if alg != "HS256" or secret != SECRET:
        return False
    exp, sub, granted = claims.get("exp"), claims.get("sub"), claims.get("channels", [])
    # A NumericDate may have a fraction; a bool is a number to Python, not to JSON.
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or exp <= NOW:
        return False
    if not isinstance(sub, str) or not sub:
        return False
    if not isinstance(granted, list) or not all(isinstance(p, str) and p for p in granted):
        return False
    if channel.startswith("user."):
        return sub == channel[len("user.") :]
    return any(channel.startswith(p[:-1]) if p.endswith("*") else channel == p for p in granted)


def answer(token: str, channel: str) -> bool:
    try:
        reader = authorize(token, channel, SECRET)
    except (Unauthorized, Forbidden):
        return False
    assert reader.expires > NOW
    return True


@settings(max_examples=600, deadline=None)
@given(
    claims=claim_sets,
    alg=st.sampled_from(["HS256", "HS384", "HS512", "none"]),
    secret=st.sampled_from([SECRET, OTHER]),
    channel=channels,
)
def test_a_token_grants_exactly_what_its_signed_claims_say(claims, alg, secret, channel):
    assert answer(sign(claims, alg, secret), channel) == expected(claims, alg, secret, channel)


@settings(max_examples=400, deadline=None)
@given(
    sub=letters.filter(bool),
    exp=st.one_of(st.integers(int(NOW) + 60, 10**30), st.floats(NOW + 60, 1e300)),
    granted=st.lists(patterns.filter(bool), max_size=4),
    alg=st.sampled_from(["HS256", "HS384", "HS512", "none"]),
    secret=st.sampled_from([SECRET, OTHER]),
    channel=channels,
)
def test_well_formed_claims_grant_only_under_our_signature(sub, exp, granted, alg, secret, channel):
    """As above, with claims that would grant often: only the signature may refuse them."""
    claims = {"sub": sub, "exp": exp, "channels": granted}
    assert answer(sign(claims, alg, secret), channel) == expected(claims, alg, secret, channel)


@settings(max_examples=300, deadline=None)
@given(signed=claim_sets, forged=claim_sets, channel=channels)
def test_claims_swapped_under_a_valid_signature_grant_nothing(signed, forged, channel):
    header, _, signature = jwt.encode(signed, SECRET, algorithm="HS256").split(".")
    payload = b64(json.dumps(forged).encode())
    token = f"{header}.{payload}.{signature}"
    if forged == signed:
        return
    assert not answer(token, channel)


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=200), channel=channels)
def test_any_text_as_a_token_is_refused_not_crashed_on(token, channel):
    assert not answer(token, channel)
