"""Structured JSON logs on stdout, one event per line.

Correlation fields are internal ids only (topic, partition, offset, event_id, charge_id).
Patient ids, names and diagnosis codes are never passed to a logger at INFO or above.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

from kafka.errors import KafkaError

from worker.errors import ChargeCaptureError


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON lines at `level` on `stream` (default stdout; stderr where stdout is data)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python logs connection chatter at INFO, the schema registry client's HTTP stack
    # every request: keep them to warnings.
    for chatty in ("kafka", "httpx", "httpx2", "httpcore", "httpcore2"):
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
