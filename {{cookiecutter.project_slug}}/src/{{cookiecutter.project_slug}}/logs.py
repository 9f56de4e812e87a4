"""Log lines an operator can grep and a log shipper can parse: `key=value` pairs (logfmt).

Each module logs to its own stdlib logger (`logging.getLogger(__name__)`), and every
message is `event=<what> key=value ...`, so the lines read the same in a terminal and in
Loki, Datadog or `grep event=drop`. Levels:

- DEBUG: every stream's connect (or resume, with its Last-Event-ID) and its normal end.
  Thousands a second in a reconnect storm: off unless asked for (SSE_LOG_LEVEL=debug).
- INFO: a worker ending its open streams because it is stopping, with how many; the
  delivery mode of its streams (`event=delivery`), once.
- WARNING: a client dropped for being too slow, or for any reason other than leaving,
  finishing or a shutdown; a server the app cannot hear stop (`event=deaf_to_shutdown`).
"""

from __future__ import annotations

import logging
import sys
import time

PACKAGE = __name__.rpartition(".")[0]
FORMAT = "time=%(asctime)s.%(msecs)03dZ level=%(levelname)s logger=%(name)s %(message)s"


def value(text: object) -> str:
    """A logfmt value: quoted when it holds a space, a quote or `=`, or is empty."""
    text = str(text)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def formatter() -> logging.Formatter:
    """Lines like `time=2025-01-31T12:00:00.123Z level=INFO logger=... event=...` (UTC)."""
    result = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    result.converter = time.gmtime
    return result


def configure_logging(level: str) -> None:
    """Set this package's log level; add a stderr handler only if nobody configured logging.

    uvicorn configures its own loggers and leaves the root logger alone, so without a
    handler here the package's INFO lines would go nowhere. A deployment that configures
    logging itself (a root handler, `--log-config`) keeps full control.
    """
    logger = logging.getLogger(PACKAGE)
    logger.setLevel(level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter())
        logger.addHandler(handler)
