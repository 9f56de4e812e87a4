"""Framing under any input: one event read back unchanged by a spec parser, or FrameError.

The parser below follows the HTML spec's "Interpreting an event stream" step by step
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
independently of `sse.py`, so the two cannot share a mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from {{ cookiecutter.project_slug }}.sse import (
    FrameError,
    encode_comment,
    encode_event,
    encode_retry,
)


@dataclass
class Dispatched:
    type: str
    data: str
    last_event_id: str


@dataclass
class Parsed:
    events: list[Dispatched]
    retry: int | None


def parse(stream: bytes) -> Parsed:
    """What an EventSource dispatches for `stream`, by the spec's algorithm."""
    text = stream.decode("utf-8", errors="replace")  # UTF-8 decode
    text = text.removeprefix("\ufeff")  # one leading BOM is ignored
    events: list[Dispatched] = []
    data, event_type, id_buffer, last_event_id = "", "", "", ""
    retry: int | None = None
    # Lines end with CRLF, LF or CR; text after the last line break is an incomplete
    # line, and an incomplete event at the end of the stream is discarded.
    *lines, _incomplete = re.split(r"\r\n|\r|\n", text)
    for line in lines:
        if line == "":  # dispatch
            last_event_id = id_buffer
            if data == "":
                event_type = ""
                continue
            dispatched = Dispatched(event_type or "message", data.removesuffix("\n"), last_event_id)
            events.append(dispatched)
            data, event_type = "", ""
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id" and "\0" not in value:
            id_buffer = value
        elif field == "retry" and value and all(char in "0123456789" for char in value):
            retry = int(value)
    return Parsed(events, retry)


# Every code point, lone surrogates and line breaks included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
# Few distinct characters, so line breaks, colons and spaces meet in every combination.
breaks_and_colons = st.text(st.sampled_from(["\r", "\n", ":", " ", "\0", "a", "é"]))
field_text = st.one_of(any_text, breaks_and_colons)


@given(
    data=field_text,
    id=st.none() | field_text,
    event=st.none() | field_text,
    retry=st.none() | st.integers(min_value=-5, max_value=10**12),
)
@example(data="", id=None, event=None, retry=None)
@example(data="a\r\nb\rc\nd", id="", event="end", retry=0)
@example(data="\ud800", id=None, event=None, retry=None)
def test_an_event_is_read_back_unchanged_or_refused(data, id, event, retry):  # noqa: A002
    try:
        frame = encode_event(data, id=id, event=event, retry=retry)
    except FrameError:
        refused = (
            (id is not None and ("\r" in id or "\n" in id or "\0" in id))
            or (event is not None and ("\r" in event or "\n" in event or event == ""))
            or (retry is not None and retry < 0)
            or any("\ud800" <= char <= "\udfff" for char in data + (id or "") + (event or ""))
        )
        assert refused, "refused a value the format can carry"
        return
    parsed = parse(frame)
    # The one change the format imposes: every line break in data arrives as LF.
    expected = Dispatched(event or "message", re.sub(r"\r\n|\r", "\n", data), id or "")
    assert parsed.events == [expected]
    assert parsed.retry == retry


@given(first=field_text, second=field_text, comment=field_text)
def test_events_never_run_into_each_other(first, second, comment):
    """Two events and a comment in between: exactly two events, each intact."""
    try:
        stream = (
            encode_event(first, id="1") + encode_comment(comment) + encode_event(second, id="2")
        )
    except FrameError:
        return
    assert [(e.data, e.last_event_id) for e in parse(stream).events] == [
        (re.sub(r"\r\n|\r", "\n", first), "1"),
        (re.sub(r"\r\n|\r", "\n", second), "2"),
    ]


@given(st.integers(min_value=0, max_value=10**12))
def test_retry_alone_sets_the_delay_and_dispatches_nothing(retry_ms):
    assert parse(encode_retry(retry_ms)) == Parsed([], retry_ms)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": "1\n2"}, "id must be a single line"),
        ({"id": "a\0b"}, "id must not contain NUL"),
        ({"event": "a\rb"}, "event must be a single line"),
        ({"event": ""}, "event must not be empty"),
        ({"retry": -1}, "retry must be"),
    ],
)
def test_refusals_say_what_is_wrong(kwargs, message):
    with pytest.raises(FrameError, match=message):
        encode_event("x", **kwargs)
