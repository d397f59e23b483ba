"""Structured JSON logs on stdout, one event per line.

Correlation fields are internal ids only (topic, partition, offset, event_id, charge_id).
Patient ids, names and diagnosis codes are never passed to a logger at INFO or above.

Third-party loggers (kafka-python's `kafka.*`) go through the same formatter at their own level
(`--kafka-log-level`, WARNING by default), rate-limited: one line per message kind per minute,
the next one carrying how many were suppressed meanwhile. During a broker outage kafka-python
repeats the same few connection errors every second; the worker says once that the broker is
unreachable and once that it is back (worker.runtime.outage).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from kafka.errors import KafkaError

from worker.errors import ChargeCaptureError


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})  # on every line: which process wrote it

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


THIRD_PARTY = ("kafka",)  # logger names whose lines are rate-limited
RATE_WINDOW_S = 60.0
_NUMBERS = re.compile(r"\d+(\.\d+)?")


class RateLimit(logging.Filter):
    """One line per message kind per `window_s` for third-party loggers.

    A kind is the logger, the level and the message template with its numbers blanked
    (kafka-python formats some messages itself, with node ids, ports and backoffs inside). The
    first line of a kind in a window passes; the rest are counted, and the first line of the
    next window carries `suppressed` (how many were dropped before it).
    """

    def __init__(
        self,
        window_s: float = RATE_WINDOW_S,
        prefixes: tuple[str, ...] = THIRD_PARTY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s, self.prefixes, self.clock = window_s, prefixes, clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}  # -> (opened, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not any(name == p or name.startswith(p + ".") for p in self.prefixes):
            return True
        kind = (name, record.levelno, _NUMBERS.sub("#", str(record.msg))[:200])
        now = self.clock()
        with self._lock:
            opened, dropped = self._kinds.get(kind, (-self.window_s, 0))
            if now - opened < self.window_s:
                self._kinds[kind] = (opened, dropped + 1)
                return False
            self._kinds[kind] = (now, 0)
            if len(self._kinds) > 1000:  # kinds are few; this only bounds a pathological case
                self._kinds = {k: v for k, v in self._kinds.items() if now - v[0] < self.window_s}
        if dropped:
            extra = dict(getattr(record, "fields", None) or {})
            extra["suppressed"] = dropped
            extra["suppressed_window_s"] = self.window_s
            record.fields = extra
        return True


class ClosedTransportReads(logging.Filter):
    """kafka-python 3 closes a connection's transport from the thread that closes the client,
    while its I/O thread may be reading that transport: the read then fails on the socket just
    closed and logs an ERROR with a traceback ("Error receiving network data closing socket"),
    though nothing went wrong (the worker or the demo closed the client on purpose). A line
    about a transport already closing is kept at DEBUG; any other is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        is_closing = getattr(args[0], "is_closing", None) if args else None
        if record.levelno < logging.ERROR or not callable(is_closing) or is_closing() is not True:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def configure(
    level: str = "INFO",
    stream: TextIO | None = None,
    kafka_level: str = "WARNING",
    static: dict[str, Any] | None = None,
) -> None:
    """JSON lines at `level` on `stream` (default stdout; stderr where stdout is data);
    kafka-python's at `kafka_level`, rate-limited; `static` fields on every line."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(static))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python logs connection chatter at INFO and every failed reconnect at ERROR; the
    # schema registry client's HTTP stack logs every request at INFO.
    logging.getLogger("kafka").setLevel(kafka_level.upper())
    transport = logging.getLogger("kafka.net.transport")
    if not any(isinstance(f, ClosedTransportReads) for f in transport.filters):
        transport.addFilter(ClosedTransportReads())
    for chatty in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: `log.info("...", extra=fields(topic=t, partition=p))`."""
    return {"fields": values}


# Exceptions whose text names topics, partitions, offsets, ids, files or addresses, never
# record data: the OS's, Kafka's and our own.
_TEXT_IS_SAFE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaError,
    ChargeCaptureError,
)


def describe_error(error: BaseException) -> str:
    """What a log line at INFO and above may say about an exception.

    The text of an arbitrary exception may quote the data it failed on (a KeyError shows its
    key, a pydantic error its input: possibly a patient id), so only the types known to be
    safe keep their text; for the rest the type name is logged and the text goes to DEBUG.
    """
    name = type(error).__name__
    if isinstance(error, _TEXT_IS_SAFE):
        return f"{name}: {error}"
    logging.getLogger(__name__).debug("%s: %s", name, error)
    return f"{name} (details at DEBUG)"
