"""A Confluent Schema Registry as the Codec's SchemaSource (worker.serde.framing).

Subjects follow the TopicNameStrategy of Confluent's serializers: `<topic>-value`.

- Reading: a record's writer schema is fetched by id once (worker.serde.schema_registry caches
  it for good) and must resolve to our reader schema in schemas/ by Avro schema resolution; an
  id the registry does not know, or a writer our reader cannot read, is the record's fault
  (SchemaRefused: dead-lettered as SCHEMA with the id); a registry that does not answer is
  nobody's (SchemaUnavailable: wait and retry).
- Writing: at `open`, our schema of each written record is registered under its topic's subject
  (auto-register, the Confluent serializers' default), or only looked up; the ids are kept, so
  no record ever costs a request. Re-keyed events keep their bytes, hence their ids.
- Checking: at `open`, the latest schema of each read topic's subject must be readable by our
  reader; each problem is logged on its own line and the start refused.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from worker.config import WorkerConfig
from worker.errors import SchemaRegistrySetupError, SchemaUnavailable
from worker.observability.logs import fields
from worker.serde.codec import Codec
from worker.serde.framing import EVENT, LocalRegistry, SchemaRefused
from worker.serde.schema_registry import (
    RecordSchemaError,
    RegistryAuthError,
    RegistryConfigError,
    RegistryRequestError,
    RegistrySettings,
    RegistryUnavailable,
    SchemaRegistry,
    UnknownSchema,
)

log = logging.getLogger("charge_capture.schema_registry")

T = TypeVar("T")


def subject_for(topic: str) -> str:
    """TopicNameStrategy: the subject of a topic's record values."""
    return f"{topic}-value"


class RegistrySource:
    """Schema ids from a Confluent Schema Registry; reader schemas from schemas/."""

    remote = True

    def __init__(
        self,
        registry: SchemaRegistry,
        *,
        writes: Mapping[str, str],
        checks: Sequence[str] = (),
        auto_register: bool = True,
        local: LocalRegistry | None = None,
    ) -> None:
        """`writes`: topic -> the record (full name) written to it; `checks`: topics whose
        subject's latest schema must be readable by our event reader."""
        self.registry = registry
        self.local = local or LocalRegistry()
        self.writes = dict(writes)
        self.checks = tuple(checks)
        self.auto_register = auto_register
        self._ids: dict[tuple[str, str], int] = {}  # (record name, topic) -> id
        self._opened = False

    # -- start -------------------------------------------------------------------------------

    def open(self) -> None:
        if self._opened:
            return
        for topic in self.checks:
            self._check(topic)
        ids: dict[tuple[str, str], int] = {}
        for topic, name in self.writes.items():
            subject = subject_for(topic)
            document = self.local.current[name].document
            ask = functools.partial(self.registry.id_for, subject, document, self.auto_register)
            ids[(name, topic)] = self._at_start(ask)
        self._ids = ids
        self._opened = True
        log.info(
            "schema registry ids resolved",
            extra=fields(
                registry=self.registry.url,
                auto_register=self.auto_register,
                ids={subject_for(topic): i for (_, topic), i in ids.items()},
            ),
        )

    def _check(self, topic: str) -> None:
        subject = subject_for(topic)
        ours = self.local.current[EVENT]
        problems = self._at_start(lambda: self.registry.check_reader(subject, ours.document))
        for problem in problems:
            log.error(
                "input schema cannot be read with ours",
                extra=fields(subject=subject, reader=f"schemas/{ours.file}", problem=problem),
            )
        if problems:
            raise SchemaRegistrySetupError(
                f"the latest schema of subject {subject} cannot be read with {EVENT} "
                f"(schemas/{ours.file}): " + "; ".join(problems)
            )

    def _at_start(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except RegistryAuthError as error:
            # At start a refusal of our credentials is a setting to fix, not an outage.
            raise SchemaRegistrySetupError(
                f"{error}: check --schema-registry-user and CHARGE_CAPTURE_SCHEMA_REGISTRY_PASSWORD"
            ) from error
        except RegistryUnavailable as error:
            raise SchemaUnavailable(str(error)) from error
        except RegistryRequestError as error:  # SchemaNotRegistered, SchemaRejected, ...
            raise SchemaRegistrySetupError(str(error)) from error

    def close(self) -> None:
        self.registry.close()

    # -- per id ------------------------------------------------------------------------------

    def reader(self, name: str) -> Any:
        return self.local.reader(name)

    def document(self, name: str) -> Any:
        return self.local.document(name)

    def writer(self, schema_id: int, expected: str) -> Any:
        ours = self.local.current[expected]
        try:
            problems = self.registry.problems_reading(schema_id, ours.document)
            parsed = self.registry.writer_schema(schema_id)
        except UnknownSchema as error:
            # Maybe not replicated to this registry yet: asked again after a while.
            wait = self.registry.settings.unknown_id_retry_s
            raise SchemaRefused(str(error), retry_after_s=wait) from error
        except RecordSchemaError as error:
            raise SchemaRefused(str(error)) from error
        except RegistryUnavailable as error:  # credentials refused mid-run included: wait
            raise SchemaUnavailable(str(error)) from error
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SchemaRefused(f"{expected} (schemas/{ours.file}) cannot read {problems[0]}{more}")
        return parsed

    def writer_id(self, name: str, topic: str | None) -> int:
        if topic is not None:
            found = self._ids.get((name, topic))
            if found is not None:
                return found
        else:
            ids = {i for (n, _), i in self._ids.items() if n == name}
            if len(ids) == 1:
                return ids.pop()
        raise LookupError(
            f"no schema registry id was resolved at start for {name} on topic {topic} "
            f"(resolved: {sorted(self._ids)})"
        )


def codec_for(
    config: WorkerConfig, *, writes: Mapping[str, str], checks: Sequence[str] = ()
) -> Codec:
    """The Codec of a command: over the schema registry when one is configured (not opened
    yet: Codec.open), else over schemas/registry.json.

    `writes`: topic -> record name written to it; `checks`: topics whose subject's latest
    schema our reader must read.
    """
    if not config.schema_registry_url:
        return Codec()
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("user", config.schema_registry_user),
            ("ca_file", config.schema_registry_ca_file),
        )
        if value
    }
    settings = RegistrySettings.from_env(config.schema_registry_url, **overrides)
    try:
        registry = SchemaRegistry(settings)
    except RegistryConfigError as error:
        ca_file = settings.ca_file
        where = f" (CA file {ca_file})" if ca_file else ""
        raise SchemaRegistrySetupError(f"{error}{where}") from error
    source = RegistrySource(
        registry, writes=writes, checks=checks, auto_register=config.auto_register_schemas
    )
    return Codec(source)
