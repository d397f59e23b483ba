"""One exception root for the worker, and the exit codes of the fatal errors.

`ChargeCaptureError` is the root of every error the worker raises on purpose. Their messages
name topics, partitions, offsets, files, settings and addresses, never record data, so log
lines may show them in full (`describe_error`). A `FatalError` stops the process with its
`exit_code` (documented in docs/operations.md "Exit codes"); everything else is handled where
it is raised: a record that cannot be decided goes to the DLQ, a failed batch is rewound, a
stuck transactional call gets a new producer, a broker outage is waited out.
"""

from __future__ import annotations

from rules.model import ErrorKind

# sysexits.h codes, as supervisors and runbooks know them
EXIT_USAGE = 2  # argparse's own: a bad flag or value
EXIT_FAILED = 1  # the command ran but could not finish its job
EXIT_DATAERR = 65  # EX_DATAERR: stored state does not read back; no usable input line
EXIT_NOINPUT = 66  # EX_NOINPUT: an input file is missing, a directory or not text
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: no broker or registry answered in time
EXIT_CANTCREAT = 73  # EX_CANTCREAT: an output file cannot be written
EXIT_CONFIG = 78  # EX_CONFIG: settings, rule packs or the topic layout are unusable


class ChargeCaptureError(Exception):
    """Root of the worker's own errors; the text never carries record data."""


class FatalError(ChargeCaptureError):
    """No restart can fix it: the process stops with `exit_code` and one log line."""

    exit_code = EXIT_FAILED
    summary = "fatal error; exiting"  # the log line's message; the error's text goes beside it


class ConfigError(FatalError):
    """Settings, a rule pack or the topics are unusable as configured."""

    exit_code = EXIT_CONFIG
    summary = "configuration unusable; exiting"


class TopicLayoutError(ConfigError):
    """The input, repartition and changelog topics are missing or not co-partitioned, or the
    changelog was built under another partitioner or partition count."""

    summary = "topic layout unusable; exiting"


class StateCorrupt(FatalError):
    """A changelog record that does not restore: deciding on partial state would reuse
    decision versions, so the process stops."""

    exit_code = EXIT_DATAERR
    summary = "state does not restore; exiting"


class BrokerUnavailable(FatalError):
    """No Kafka broker answers: at the configured addresses (a one-off verb; the message names
    each), or for longer than --max-broker-outage (the worker: waiting longer in-process helps
    nobody, and an exit is what a supervisor and an alert see)."""

    exit_code = EXIT_UNAVAILABLE
    summary = "broker unreachable for too long; exiting"


class CallDeadlineExceeded(ChargeCaptureError):
    """A transactional call did not return in time, or its transaction outlived
    transaction.timeout.ms: the producer is abandoned and a new one fences it."""


class Stopping(ChargeCaptureError):
    """A stop was requested while a call was still waiting: it is abandoned."""


class UndecidableRecord(ChargeCaptureError):
    """An input record that can never be decided: it goes to the DLQ with its kind."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class RecordFailed(ChargeCaptureError):
    """Deciding one input record raised something no check foresaw (a bug, or data nobody
    expected), or its outputs could not be produced (too large, refused by the broker): the
    batch aborts, and the record is dead-lettered with `kind` when it is read again."""

    def __init__(
        self,
        where: tuple[str, int, int],
        cause: str,
        kind: ErrorKind = ErrorKind.VALIDATION,
        *,
        bare: bool = False,
    ) -> None:
        topic, partition, offset = where
        super().__init__(f"record {topic}[{partition}] offset {offset}: {cause}")
        self.where = where
        self.cause = cause
        self.kind = kind
        # Its dead letter was refused too: the next one carries no copy of the value at all.
        self.bare = bare


class OutputsFailed(ChargeCaptureError):
    """Outputs of a batch were refused record by record (too large, invalid): each failure
    names the input record it came from, which is dead-lettered when the batch is redone."""

    def __init__(self, failures: list[RecordFailed]) -> None:
        first = failures[0]
        super().__init__(f"{len(failures)} input record(s) with refused outputs, first {first}")
        self.failures = failures


class InstanceRestart(ChargeCaptureError):
    """Drop clients and state, rejoin the group and restore: the batch did not commit.

    `reason` is one of worker.observability.metrics.RESTART_REASONS."""

    def __init__(self, message: str, reason: str = "batch_failed") -> None:
        super().__init__(message)
        self.reason = reason


class ReplayError(ChargeCaptureError):
    """A replay ran but could not finish its job (outputs incomplete, a read stalled)."""


# -- the schema registry (worker.serde.registry_source, worker.processing.schema_wait) --------


class SchemaUnavailable(ChargeCaptureError):
    """The schema registry gave no usable answer: no record's fault. Nothing is dead-lettered
    for it; the batch is read again after a wait (readiness false), and past
    --schema-registry-outage-s the worker stops (SchemaRegistryOutage)."""


class SchemaRegistryOutage(FatalError):
    """The schema registry did not answer for longer than --schema-registry-outage-s."""

    exit_code = EXIT_UNAVAILABLE
    summary = "schema registry unreachable for too long; exiting"


class SchemaRegistrySetupError(ConfigError):
    """Our schemas cannot be used with the schema registry as configured: an output subject
    missing while auto-register is off, a registration refused, credentials refused, or an input
    subject whose latest schema our reader cannot read."""

    summary = "schemas unusable with the schema registry; exiting"


class BrokerStartError(FatalError):
    """The embedded broker did not come up; the message points at its log."""

    exit_code = EXIT_UNAVAILABLE
    summary = "embedded broker did not start; exiting"


class InputUnreadable(FatalError):
    """An input file that cannot be read as text lines (missing, a directory, binary)."""

    exit_code = EXIT_NOINPUT
    summary = "input unreadable; exiting"


class NothingUsable(FatalError):
    """An input with no usable line (empty, or every line rejected): nothing was done."""

    exit_code = EXIT_DATAERR
    summary = "no usable input; exiting"


class OutputUnwritable(FatalError):
    """An output file that cannot be created or written."""

    exit_code = EXIT_CANTCREAT
    summary = "output unwritable; exiting"
