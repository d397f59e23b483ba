"""One exception root for the worker, and the exit codes of the fatal errors.

`ChargeCaptureError` is the root of every error the worker raises on purpose. Their messages
name topics, partitions, offsets, files, settings and addresses, never record data, so log
lines may show them in full (`describe_error`). A `FatalError` stops the process with its
`exit_code` (documented in docs/operations.md); everything else is handled where it is raised:
a record that cannot be decided goes to the DLQ, a failed batch restarts the instance.
"""

from __future__ import annotations

from rules.model import ErrorKind

# sysexits.h codes, as supervisors and runbooks know them
EXIT_USAGE = 2  # argparse's own: a bad flag or value
EXIT_FAILED = 1  # the command ran but could not finish its job
EXIT_DATAERR = 65  # EX_DATAERR: stored state does not read back; no usable input line
EXIT_NOINPUT = 66  # EX_NOINPUT: an input file is missing, a directory or not text
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a broker or registry did not answer in time
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a client call hung past its deadline
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


class CallDeadlineExceeded(FatalError):
    """A client call that has no timeout of its own did not return in time."""

    exit_code = EXIT_SOFTWARE
    summary = "transactional call stuck; exiting"


class UndecidableRecord(ChargeCaptureError):
    """An input record that can never be decided: it goes to the DLQ with its kind."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class RecordFailed(ChargeCaptureError):
    """Deciding one input record raised something no check foresaw (a bug, or data nobody
    expected): the batch aborts, and the record is dead-lettered when it is read again."""

    def __init__(self, where: tuple[str, int, int], cause: str) -> None:
        topic, partition, offset = where
        super().__init__(f"record {topic}[{partition}] offset {offset}: {cause}")
        self.where = where
        self.cause = cause


class InstanceRestart(ChargeCaptureError):
    """Drop clients and state, rejoin the group and restore: the batch did not commit."""


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


class BrokerUnavailable(FatalError):
    """No Kafka broker answers at the configured addresses (the message names each one)."""

    exit_code = EXIT_UNAVAILABLE
    summary = "Kafka unavailable; exiting"


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
