"""The Schema Registry's settings, the errors of worker.serde.schema_registry, and which
exceptions mean the registry gave no answer.

Every failure is one of these, so that the caller knows whose fault it is:

* RecordSchemaError (UnknownSchema, UnusableSchema): the record's schema id names no schema, or
  one that cannot be used (not Avro, broken references): the record goes to the DLQ (SCHEMA);
* RegistryUnavailable (and RegistryAuthError): no usable answer (refused, timed out, 5xx, 408,
  429, a 404 that is not the registry's, credentials refused): not the record's fault, the batch
  waits and retries. Its text names the registry URL (without credentials), never record data;
* RegistryRequestError (SchemaRejected, SchemaNotRegistered): the registry refused a request of
  ours (an incompatible or invalid schema, a schema not registered while auto-register is off):
  a deployment error, said plainly;
* RegistryConfigError: the settings cannot make a client.

Settings come from flags and CHARGE_CAPTURE_SCHEMA_REGISTRY_{USER,PASSWORD,CA_FILE}. With the
defaults a registry that does not answer raises within about 2 x timeout_s (one retry), one that
refuses connections or answers 5xx within retry_wait_ms: see RegistrySettings.max_wait_s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ENV_PREFIX = "CHARGE_CAPTURE_SCHEMA_REGISTRY_"

# Schema Registry error codes (Confluent API reference)
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403


class RegistryError(Exception):
    """Base of this module's errors."""


class RegistryUnavailable(RegistryError):
    """The registry gave no usable answer: not the record's fault; wait and retry."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"schema registry {url} unavailable: {reason}")
        self.url = url
        self.reason = reason


class RegistryAuthError(RegistryUnavailable):
    """401/403: the registry refused our credentials (a RegistryUnavailable for a record)."""


class RecordSchemaError(RegistryError):
    """The record's schema id cannot be used: the record goes to the DLQ (kind SCHEMA)."""

    def __init__(self, schema_id: int, message: str) -> None:
        super().__init__(message)
        self.schema_id = schema_id


class UnknownSchema(RecordSchemaError):
    """The registry has no schema of this id (error code 40403)."""


class UnusableSchema(RecordSchemaError):
    """The id names a schema this worker cannot read with: not Avro, or broken references."""


class RegistryRequestError(RegistryError):
    """The registry refused a request of ours (4xx other than 401/403/408/429)."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class SchemaRejected(RegistryRequestError):
    """Registering was refused: incompatible with the subject's versions (409) or invalid (422)."""


class SchemaNotRegistered(RegistryRequestError):
    """Auto-register is off and the subject (40401) or the schema under it (40403) is missing."""


class RegistryConfigError(RegistryError, ValueError):
    """The settings cannot make a client (bad URL, unreadable CA file, ...)."""


@dataclass(frozen=True)
class RegistrySettings:
    url: str  # one URL, or several comma-separated (tried in turn)
    user: str | None = None  # basic auth (basic.auth.user.info)
    password: str | None = None
    ca_file: str | None = None  # ssl.ca.location: a CA bundle file or a directory
    timeout_s: float = 5.0  # each HTTP request (connect, and again for the answer)
    retries: int = 1  # retries of a refused/timed-out/5xx request, after the first try
    retry_wait_ms: int = 100  # the first retry waits up to this (full jitter), then doubles
    retry_max_wait_ms: int = 1000
    unknown_id_retry_s: float = 30.0  # an unknown id is asked for again only after this

    @classmethod
    def from_env(
        cls, url: str, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> RegistrySettings:
        """User, password, CA file from CHARGE_CAPTURE_SCHEMA_REGISTRY_{USER,PASSWORD,CA_FILE}."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            name: env.get(ENV_PREFIX + name.upper()) or None
            for name in ("user", "password", "ca_file")
        }
        values.update(overrides)
        return cls(url=url, **values)

    @property
    def urls(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def safe_url(self) -> str:
        """The URL(s) without credentials, for messages."""
        return ",".join(_without_userinfo(u) for u in self.urls)

    @property
    def max_wait_s(self) -> float:
        """About the longest a request takes to fail when the registry does not answer."""
        sleeps: float = sum(
            min(self.retry_wait_ms * 2**i, self.retry_max_wait_ms) for i in range(self.retries)
        )
        return len(self.urls) * ((self.retries + 1) * self.timeout_s + sleeps / 1000)

    def client_config(self) -> dict[str, Any]:
        """The SchemaRegistryClient configuration (with the credentials)."""
        conf: dict[str, Any] = {
            "url": self.url,
            # confluent-kafka's default is no timeout at all: a hung registry would block forever
            "timeout": self.timeout_s,
            "max.retries": self.retries,
            "retries.wait.ms": self.retry_wait_ms,
            "retries.max.wait.ms": self.retry_max_wait_ms,
        }
        if self.user is not None or self.password is not None:
            conf["basic.auth.user.info"] = f"{self.user or ''}:{self.password or ''}"
        if self.ca_file:
            conf["ssl.ca.location"] = self.ca_file
        return conf


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def is_transport_error(error: BaseException) -> bool:
    """An error of the HTTP stack (httpx or httpx2, httpcore, h11) or of the OS: no answer."""
    if isinstance(error, OSError):
        return True
    roots = ("httpx", "httpx2", "httpcore", "httpcore2", "h11", "ssl")
    return any(k.__module__.split(".")[0] in roots for k in type(error).__mro__[:-2])
