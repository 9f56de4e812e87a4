"""The API against its own OpenAPI schema (schemathesis): no 5xx, every answer documented."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from conftest import RunningServer

# Kept small: the run checks every operation of a live server, and must stay quick.
EXAMPLES = 25


def test_every_operation_matches_the_schema(serve):
    # Short streams, so that every generated request to /events ends by itself.
    running: RunningServer = serve(message_count=2, message_interval=0, publish_token="secret")
    schema = schemathesis.openapi.from_url(running.url + "/openapi.json")
    # A channel subscription stays open for live messages by design: nothing generated
    # could wait for its end. Its input checks have their own tests.
    schema = schema.exclude(method="GET", path_regex=r"^/channels/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the schema lists no operations"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(timeout=10)

        check()
