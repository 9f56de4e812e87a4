"""Hearing that the server stops, before it waits for the open streams to end.

An endless stream keeps a server waiting for it: uvicorn runs the lifespan shutdown only
once every response has finished, so a stream ended only there would keep it "Waiting for
connections to close" for ever. So `on_stop(callback)` calls `callback` as soon as
either of these says the server is stopping:

- SIGINT or SIGTERM (Ctrl+C, `kill`, a container stop, `--reload`): the handler the
  server installed is chained, so the callback runs at once, then the server's own.
- under uvicorn, the server itself: its signal handler is a method of the running
  `uvicorn.Server`, which is watched ten times a second (as often as uvicorn looks
  itself) for `should_exit`, for listeners closed, and for `--limit-max-requests`.
  uvicorn counts a request when its response completes, so a worker whose last
  requests are streams would never reach its limit: it is reached here once the
  requests done and the streams open add up to it, and ending the streams completes
  them.

The lifespan shutdown calls the callback too (the hub), for servers that send it first.
A server that gives the app neither (hypercorn's worker processes: the parent hears the
signal, the worker only a shutdown event it polls) cuts the streams when its graceful
timeout ends, and the app says so at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from .logs import value

log = logging.getLogger(__name__)
#: Seconds between two looks at the uvicorn server: uvicorn's own main loop ticks at 0.1 s.
WATCH_EVERY = 0.1
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_stop(
    callback: Callable[[], None], streams_open: Callable[[], int]
) -> asyncio.Task[None] | None:
    """Call `callback` once the server is stopping; the watcher task, if there is one."""
    loop = asyncio.get_running_loop()
    server = uvicorn_server()
    chained = [_chain(sig, lambda: loop.call_soon_threadsafe(callback)) for sig in SIGNALS]
    if server is None and not any(chained):
        log.warning(
            "event=deaf_to_shutdown note=%s",
            value(
                "this server gives the app no way to hear that it stops (no signal handler "
                "in this process): open streams are cut when its graceful timeout ends; "
                "run hypercorn with --workers 0"
            ),
        )
    if server is None:
        return None
    return asyncio.create_task(_watch(server, callback, streams_open), name="sse-server-watch")


def uvicorn_server() -> Any | None:
    """The running uvicorn.Server, found through the SIGTERM handler it installed.

    uvicorn sets `Server.handle_exit` as the handler of SIGINT and SIGTERM when it runs in
    the main thread (the `uvicorn` command, each `--workers` process, `uvicorn.run()`).
    Anything else (another server, uvicorn in a thread) has no such handler: None.
    """
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    if hasattr(server, "should_exit") and hasattr(server, "server_state"):
        return server
    return None


def _chain(sig: signal.Signals, then: Callable[[], None]) -> bool:
    """Run `then` before the signal handler the server installed; False if there is none."""
    previous = signal.getsignal(sig)
    if not callable(previous) or previous is signal.default_int_handler:
        return False  # the default action: nobody here would stop gracefully

    def handler(signum: int, frame: FrameType | None) -> None:
        then()
        previous(signum, frame)

    try:
        signal.signal(sig, handler)
    except ValueError:  # only the main thread may set handlers
        return False
    return True


def stopping(server: Any, streams_open: int) -> bool:
    """Whether a uvicorn server stops: asked to, at its request limit, or not listening."""
    if server.should_exit:
        return True
    # The limit with its jitter drawn (uvicorns with --limit-max-requests-jitter), else
    # as configured.
    limit = getattr(server, "limit_max_requests", server.config.limit_max_requests)
    if limit is not None and server.server_state.total_requests + streams_open >= limit:
        return True
    # Created once the lifespan start-up is done; closed first thing when it shuts down.
    listeners = getattr(server, "servers", None)
    return bool(listeners) and not any(listener.is_serving() for listener in listeners)


async def _watch(
    server: Any, callback: Callable[[], None], streams_open: Callable[[], int]
) -> None:
    # Polled: uvicorn keeps these as plain attributes, with no event to wait on.
    while not stopping(server, streams_open()):  # noqa: ASYNC110
        await asyncio.sleep(WATCH_EVERY)
    callback()
