"""Waiting out a schema registry that does not answer: bounded, with backoff, readiness false.

A registry that does not answer is no record's fault, so no record is dead-lettered for it.
The live worker and replay fetch the writer schemas of a batch's new schema ids before anything
of the batch is decided or sent (`fetched`, over Codec.prefetch); when the registry does not
answer, nothing of the batch has happened yet, so the caller reads the batch again after the
wait (the worker seeks back to its first offsets, replay retries it in hand) and no record is
decided twice. The ids of our outputs are resolved once, at start (`open`), under the same
rule. Once the registry has been silent for `limit_s` (--schema-registry-outage-s) the process
stops: SchemaRegistryOutage, exit 69.

With every id of the stream known, an outage costs nothing: the per-record path asks the
registry nothing, so only a new schema id (a producer that evolved) or a start waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from worker.errors import SchemaRegistryOutage, SchemaUnavailable
from worker.observability.health import Health
from worker.observability.logs import fields
from worker.serde.codec import Codec

log = logging.getLogger("charge_capture.schema_registry")

READINESS_REASON = "schema registry unreachable"
FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 10.0


class SchemaWait:
    """One outage at a time: since when the registry has been silent, and the next backoff."""

    def __init__(
        self,
        limit_s: float,
        health: Health | None = None,
        on_answer: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_s = limit_s
        self.health = health
        self.on_answer = on_answer  # e.g. the worker's readiness as it was before the outage
        self.clock = clock
        self.stop = threading.Event()  # the waits end early when it is set
        self.since: float | None = None
        self.waits = 0
        self._next_wait = FIRST_WAIT_S

    def open(self, codec: Codec, stop: threading.Event | None = None) -> bool:
        """Open `codec` (ids resolved, inputs checked), waiting for a silent registry; False
        when `stop` was set first. `stop` is kept for the later waits."""
        if stop is not None:
            self.stop = stop
        while not self.stop.is_set():
            try:
                codec.open()
            except SchemaUnavailable as error:
                self.wait(error)
                continue
            self.answered()
            return True
        return False

    def fetched(self, codec: Codec, values: Iterable[bytes | None]) -> bool:
        """Fetch the writer schemas of `values`' new ids; False after a wait when the registry
        did not answer (the caller reads the batch again)."""
        try:
            codec.prefetch(values)
        except SchemaUnavailable as error:
            self.wait(error)
            return False
        self.answered()
        return True

    def wait(self, error: SchemaUnavailable) -> None:
        """One backoff (readiness false); SchemaRegistryOutage once past the limit."""
        now = self.clock()
        if self.since is None:
            self.since = now
            log.warning(
                "schema registry unreachable: waiting, nothing is dead-lettered for it",
                extra=fields(error=str(error), limit_s=self.limit_s),
            )
        silent = now - self.since
        if silent >= self.limit_s:
            raise SchemaRegistryOutage(
                f"no answer for {silent:.0f} s (--schema-registry-outage-s {self.limit_s:g}): "
                f"{error}"
            )
        if self.health is not None:
            self.health.set_ready(False, READINESS_REASON)
            # Waiting on purpose, bounded by the limit: alive, so that liveness does not
            # restart a pod the registry keeps waiting at start (each attempt takes <= ~10 s).
            self.health.mark_loop_alive()
        self.waits += 1
        self.stop.wait(min(self._next_wait, self.limit_s - silent))
        self._next_wait = min(self._next_wait * 2, LONGEST_WAIT_S)

    def answered(self) -> None:
        """The registry answered: an outage, if any, is over."""
        if self.since is None:
            return
        log.info(
            "schema registry answers again",
            extra=fields(silent_s=round(self.clock() - self.since, 1), waits=self.waits),
        )
        self.since = None
        self._next_wait = FIRST_WAIT_S
        if self.on_answer is not None:
            self.on_answer()
