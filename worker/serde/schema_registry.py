"""Schemas through a Confluent Schema Registry, over confluent-kafka's SchemaRegistryClient.

Reading: `writer_schema(id)` fetches the writer schema of a record's id (GET /schemas/ids/{id})
once and keeps the fastavro-parsed schema for good; `problems_reading(id, reader)` says whether
(and where not) it resolves to our reader schema. Writing: `id_for(subject, schema,
auto_register)` registers our schema under a subject (POST /subjects/{s}/versions), or only looks
it up (POST /subjects/{s}). At start, `check_reader(subject, reader)` compares the subject's latest
schema with our reader schema (worker.serde.avro_compat).

Failures are classified by whose fault they are (the record's, nobody's: wait and retry, or
ours): see worker.serde.registry_settings, where they and RegistrySettings are defined.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import fastavro
from confluent_kafka.schema_registry import (
    RegisteredSchema,
    Schema,
    SchemaReference,
    SchemaRegistryClient,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError

from worker.observability.logs import fields
from worker.serde.avro_compat import InvalidSchema, reader_problems
from worker.serde.registry_settings import (
    ENV_PREFIX,
    SCHEMA_NOT_FOUND,
    SUBJECT_NOT_FOUND,
    VERSION_NOT_FOUND,
    RecordSchemaError,
    RegistryAuthError,
    RegistryConfigError,
    RegistryError,
    RegistryRequestError,
    RegistrySettings,
    RegistryUnavailable,
    SchemaNotRegistered,
    SchemaRejected,
    UnknownSchema,
    UnusableSchema,
    is_transport_error,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# The errors and settings live beside this module; they are imported from here too.
__all__ = [
    "ENV_PREFIX",
    "SCHEMA_NOT_FOUND",
    "SUBJECT_NOT_FOUND",
    "VERSION_NOT_FOUND",
    "RecordSchemaError",
    "RegistryAuthError",
    "RegistryConfigError",
    "RegistryError",
    "RegistryRequestError",
    "RegistrySettings",
    "RegistryUnavailable",
    "SchemaNotRegistered",
    "SchemaRegistry",
    "SchemaRejected",
    "UnknownSchema",
    "UnusableSchema",
    "WriterSchema",
]


@dataclass(frozen=True)
class WriterSchema:
    schema_id: int
    name: str  # full name of a named type (e.g. chargecapture.v1.ChargeEvent), else its type
    document: Any  # the JSON the registry returned (maybe its normalised form of what was sent)
    references: tuple[Any, ...]  # the referenced schemas' JSON, dependencies first
    parsed: Any  # fastavro.parse_schema of document, with the referenced names


def _name_of(document: Any) -> str:
    if isinstance(document, dict):
        name = document.get("name")
        kind = document.get("type")
        if isinstance(name, str) and kind in ("record", "enum", "fixed", "error"):
            namespace = document.get("namespace")
            if "." in name or not isinstance(namespace, str) or not namespace:
                return name
            return f"{namespace}.{name}"
        return str(kind)
    return "union" if isinstance(document, list) else str(document)


class SchemaRegistry:
    """The worker's view of a Confluent Schema Registry. Thread-safe."""

    def __init__(
        self, settings: RegistrySettings, client: SchemaRegistryClient | None = None
    ) -> None:
        self.settings = settings
        self.url = settings.safe_url
        try:
            self._client = client or SchemaRegistryClient(settings.client_config())
        except (ValueError, TypeError, OSError) as error:
            # the client's own messages name properties and paths, never the password
            raise RegistryConfigError(f"schema registry {self.url}: {error}") from error
        self._lock = threading.Lock()
        self._writers: dict[int, WriterSchema] = {}
        self._parsed: dict[int, Any] = {}
        self._unknown: dict[int, float] = {}  # id -> monotonic time it may be asked for again
        self._ids: dict[tuple[str, str], int] = {}
        self._problems: dict[tuple[int, str], list[str]] = {}
        self._reader_keys: dict[int, tuple[Any, str]] = {}  # id(reader) -> (reader, its JSON)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SchemaRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ---

    def writer_schema(self, schema_id: int) -> Any:
        """The fastavro-parsed writer schema of a record's id; fetched once, then cached.

        Raises UnknownSchema (no such id), UnusableSchema (not an Avro schema this worker can
        parse), RegistryUnavailable (no usable answer: retry later).
        """
        parsed = self._parsed.get(schema_id)
        if parsed is not None:
            return parsed
        return self.writer(schema_id).parsed

    def writer(self, schema_id: int) -> WriterSchema:
        """As writer_schema, with the schema's name and JSON."""
        found = self._writers.get(schema_id)
        if found is not None:
            return found
        with self._lock:
            found = self._writers.get(schema_id)
            if found is not None:
                return found
            retry_at = self._unknown.get(schema_id)
            if retry_at is not None and time.monotonic() < retry_at:
                raise UnknownSchema(schema_id, self._unknown_message(schema_id))
            found = self._fetch_writer(schema_id)
            self._writers[schema_id] = found
            self._parsed[schema_id] = found.parsed
            self._unknown.pop(schema_id, None)
            return found

    def problems_reading(self, schema_id: int, reader: Any) -> list[str]:
        """Why records of this schema id cannot all be read with `reader` ([] = they can).

        Each problem is prefixed with the id. Cached per id and reader (a reader schema is not
        to be changed once used). Raises as writer().
        """
        reader_key = self._reader_key(reader)
        cached = self._problems.get((schema_id, reader_key))
        if cached is not None:
            return cached
        writer = self.writer(schema_id)
        try:
            problems = reader_problems(writer.document, reader, writer_references=writer.references)
        except InvalidSchema as error:
            problems = [str(error)]
        found = [f"schema id {schema_id}: {problem}" for problem in problems]
        self._problems[(schema_id, reader_key)] = found
        return found

    def _reader_key(self, reader: Any) -> str:
        if isinstance(reader, str):
            return reader
        known = self._reader_keys.get(id(reader))
        if known is not None and known[0] is reader:
            return known[1]
        key = json.dumps(reader, sort_keys=True)
        self._reader_keys[id(reader)] = (reader, key)
        return key

    def _unknown_message(self, schema_id: int) -> str:
        return f"schema id {schema_id} is not in the schema registry {self.url}"

    def _fetch_writer(self, schema_id: int) -> WriterSchema:
        try:
            schema = self._call(
                f"schema id {schema_id}", lambda: self._client.get_schema(schema_id)
            )
        except RegistryRequestError as error:
            if error.error_code == SCHEMA_NOT_FOUND:
                self._unknown[schema_id] = time.monotonic() + self.settings.unknown_id_retry_s
                raise UnknownSchema(schema_id, self._unknown_message(schema_id)) from error
            # any other refusal (a 404 from a proxy or a wrong URL path has no registry error
            # code) is not the record's fault: dead-lettering every record would be worse
            raise RegistryUnavailable(
                self.url,
                f"schema id {schema_id}: HTTP {error.status}, error code {error.error_code}: "
                f"{error} (is the URL the registry's?)",
            ) from error
        if (schema.schema_type or "AVRO").upper() != "AVRO":
            raise UnusableSchema(
                schema_id, f"schema id {schema_id} is a {schema.schema_type} schema, not Avro"
            )
        references = self._references(schema_id, schema.references or [])
        try:
            document = json.loads(schema.schema_str or "")
            named: dict[str, Any] = {}
            for referenced in references:
                fastavro.parse_schema(referenced, named_schemas=named)
            parsed = fastavro.parse_schema(document, named_schemas=named)
        except Exception as error:  # json and fastavro raise several types for a bad schema
            raise UnusableSchema(
                schema_id,
                f"schema id {schema_id} is not an Avro schema fastavro can parse: "
                f"{type(error).__name__}: {error}",
            ) from error
        return WriterSchema(schema_id, _name_of(document), document, tuple(references), parsed)

    def _references(self, schema_id: int, references: list[SchemaReference]) -> list[Any]:
        """The referenced schemas' JSON, each after the ones it references."""
        out: list[Any] = []
        seen: set[tuple[str, int]] = set()

        def visit(refs: list[SchemaReference], depth: int) -> None:
            for ref in refs:
                if ref.subject is None or ref.version is None:
                    raise UnusableSchema(
                        schema_id,
                        f"schema id {schema_id}: reference {ref.name} without subject and version",
                    )
                subject, version = ref.subject, ref.version
                if (subject, version) in seen:
                    continue
                seen.add((subject, version))
                if depth > 32:
                    raise UnusableSchema(schema_id, f"schema id {schema_id}: references too deep")
                try:
                    registered: RegisteredSchema = self._call(
                        f"schema id {schema_id} reference {ref.name}",
                        functools.partial(self._client.get_version, subject, version),
                    )
                except RegistryRequestError as error:
                    if error.error_code in (SUBJECT_NOT_FOUND, VERSION_NOT_FOUND):
                        raise UnusableSchema(
                            schema_id,
                            f"schema id {schema_id}: its reference {ref.name} ({subject} "
                            f"version {version}) is not in the registry",
                        ) from error
                    raise RegistryUnavailable(self.url, str(error)) from error
                visit(registered.schema.references or [], depth + 1)
                try:
                    out.append(json.loads(registered.schema.schema_str or ""))
                except ValueError as error:
                    raise UnusableSchema(
                        schema_id, f"schema id {schema_id}: reference {ref.name} is not JSON"
                    ) from error

        visit(references, 0)
        return out

    # --- writing ---

    def id_for(self, subject: str, schema: str | dict[str, Any], auto_register: bool = True) -> int:
        """The registry's id of our `schema` under `subject`: registered, or only looked up.

        Raises SchemaRejected (registering refused: incompatible, invalid), SchemaNotRegistered
        (lookup only, and the subject or the schema is missing), RegistryAuthError,
        RegistryUnavailable.
        """
        text = schema if isinstance(schema, str) else json.dumps(schema)
        key = (subject, text)
        cached = self._ids.get(key)
        if cached is not None:
            return cached
        candidate = Schema(text, "AVRO")
        if auto_register:
            try:
                schema_id = self._call(
                    f"registering under {subject}",
                    lambda: self._client.register_schema(subject, candidate),
                )
            except RegistryRequestError as error:
                raise SchemaRejected(
                    error.status,
                    error.error_code,
                    f"the schema registry {self.url} refused to register {_name_of_text(text)} "
                    f"under {subject} (HTTP {error.status}, error code {error.error_code}): "
                    f"{error}",
                ) from error
        else:
            try:
                registered = self._call(
                    f"looking up in {subject}",
                    lambda: self._client.lookup_schema(subject, candidate),
                )
            except RegistryRequestError as error:
                if error.error_code == SUBJECT_NOT_FOUND:
                    why = f"subject {subject} does not exist"
                elif error.error_code == SCHEMA_NOT_FOUND:
                    why = f"subject {subject} exists but has no version equal to this schema"
                else:
                    raise
                raise SchemaNotRegistered(
                    error.status,
                    error.error_code,
                    f"{_name_of_text(text)} is not registered in the schema registry {self.url}: "
                    f"{why}, and auto-register is off: register it under {subject} first "
                    "(or turn auto-register on)",
                ) from error
            if registered.schema_id is None:
                raise RegistryUnavailable(self.url, f"looking up in {subject}: answer without id")
            schema_id = registered.schema_id
        self._ids[key] = schema_id
        return schema_id

    # --- checking ---

    def check_reader(self, subject: str, reader: Any) -> list[str]:
        """Why records of the subject's latest schema cannot all be read with `reader`.

        [] when they can, and also when the subject has no schema yet (nothing to check: that is
        logged). Raises RegistryAuthError, RegistryUnavailable.
        """
        try:
            latest = self._call(
                f"latest version of {subject}",
                lambda: self._client.get_version(subject, "latest"),
            )
        except RegistryRequestError as error:
            if error.error_code in (SUBJECT_NOT_FOUND, VERSION_NOT_FOUND):
                log.info(
                    "subject has no schema in the registry yet: nothing to check",
                    extra=fields(subject=subject, registry=self.url),
                )
                return []
            raise
        where = f"{subject} version {latest.version} (schema id {latest.schema_id})"
        schema = latest.schema
        if (schema.schema_type or "AVRO").upper() != "AVRO":
            return [f"{where} is a {schema.schema_type} schema, not Avro"]
        try:
            references: list[Any] = []
            if schema.references and latest.schema_id is not None:
                references = self._references(latest.schema_id, schema.references)
            problems = reader_problems(
                schema.schema_str or "", reader, writer_references=references
            )
        except (InvalidSchema, UnusableSchema) as error:
            return [f"{where}: {error}"]
        if not problems:
            log.info(
                "the subject's latest schema can be read",
                extra=fields(subject=subject, version=latest.version, schema_id=latest.schema_id),
            )
        return [f"{where}: {problem}" for problem in problems]

    # --- the client, with its errors classified ---

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except SchemaRegistryError as error:
            status, code = error.http_status_code, error.error_code
            message = f"{what}: HTTP {status}, error code {code}: {error.error_message}"
            if status in (401, 403):
                raise RegistryAuthError(
                    self.url, f"{message} (the registry refused the credentials)"
                ) from error
            if status in (408, 429) or status >= 500 or status < 400:
                raise RegistryUnavailable(self.url, message) from error
            raise RegistryRequestError(status, code, error.error_message) from error
        except RegistryError:
            raise
        except Exception as error:
            if is_transport_error(error):
                reason = f"{what}: {type(error).__name__}: {error}"
            elif isinstance(error, ValueError | TypeError | KeyError | AttributeError):
                # a 2xx answer that is not the registry's JSON (a proxy's page, say)
                reason = f"{what}: unexpected answer ({type(error).__name__})"
            else:
                raise
            raise RegistryUnavailable(self.url, reason) from error


def _name_of_text(text: str) -> str:
    try:
        return _name_of(json.loads(text))
    except ValueError:
        return "the schema"
