"""A small Confluent Schema Registry for tests: the documented REST API, in memory, on loopback.

    with SchemaRegistryServer(id_base=100001, auth=("user", "secret")) as registry:
        registry.url            # http://127.0.0.1:PORT
        registry.go_down("refuse" | "503" | "hang"); registry.come_back()

Endpoints (JSON shapes, status and error codes as the Confluent API reference, errors as
`{"error_code": N, "message": "..."}` in application/vnd.schemaregistry.v1+json):

    GET    /                                     {}
    GET    /schemas/types                        ["AVRO"]
    GET    /schemas                              [{subject, version, id, schema}]
    GET    /schemas/ids/{id}                     {schema[, references][, maxId]}   40403
    GET    /schemas/ids/{id}/schema              the schema itself                  40403
    GET    /schemas/ids/{id}/subjects            [subject]                          40403
    GET    /schemas/ids/{id}/versions            [{subject, version}]               40403
    GET    /subjects                             [subject]            (?deleted, ?subjectPrefix)
    GET    /subjects/{s}/versions                [version]                          40401
    GET    /subjects/{s}/versions/{v|latest}     {subject, id, version, schema}  40401 40402 42202
    GET    /subjects/{s}/versions/{v}/schema     the schema itself
    GET    /subjects/{s}/versions/{v}/referencedby [id]
    POST   /subjects/{s}/versions                register: {id}                     409 42201
    POST   /subjects/{s}                         look up: {subject, id, version, schema} 40401 40403
    DELETE /subjects/{s}[?permanent=true]        [version]                          40401 40405
    DELETE /subjects/{s}/versions/{v}[?permanent=true] version                      40402 40407
    POST   /compatibility/subjects/{s}/versions/{v|latest}  {is_compatible[, messages]}
    POST   /compatibility/subjects/{s}/versions  {is_compatible[, messages]}  (all, per level)
    GET    /config                               {compatibilityLevel}
    PUT    /config                               {compatibility}                    42203
    GET    /config/{s}[?defaultToGlobal=true]    {compatibilityLevel}               40408
    PUT    /config/{s}                           {compatibility}                    42203
    DELETE /config/{s}                           {compatibilityLevel} (the old one) 40408
    GET    /mode, /mode/{s}                      {mode: READWRITE}

Compatibility (BACKWARD by default, BACKWARD/FORWARD/FULL, _TRANSITIVE, NONE) is decided with
worker.serde.avro_compat; a registered schema gets the same id under any subject. Ids start at
`id_base`. Schemas are stored and returned as compact JSON (like the real registry's canonical
string), or as `rewrite(schema_json)` says, to stand for a registry's normalised form.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import fastavro

from worker.serde.avro_compat import InvalidSchema, find_problems

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
LEVELS = {
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
}


class HttpError(Exception):
    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def subject_not_found(subject: str) -> HttpError:
    return HttpError(404, 40401, f"Subject '{subject}' not found.")


@dataclass
class Stored:
    schema_id: int
    text: str  # as returned
    document: Any  # the parsed JSON
    schema_type: str
    references: list[dict[str, Any]]
    reference_documents: list[Any]  # the referenced schemas' JSON, dependencies first


@dataclass
class Version:
    version: int
    schema_id: int
    deleted: bool = False


@dataclass
class Subject:
    versions: list[Version] = field(default_factory=list)

    def live(self, deleted: bool = False) -> list[Version]:
        return [v for v in self.versions if deleted or not v.deleted]


class Registry:
    """The registry's state and operations; thread-safe. HTTP-free, so tests can seed it."""

    def __init__(self, id_base: int = 100001, rewrite: Callable[[Any], Any] | None = None) -> None:
        self.lock = threading.RLock()
        self.next_id = id_base
        self.rewrite = rewrite
        self.schemas: dict[int, Stored] = {}
        self.ids_by_key: dict[str, int] = {}
        self.subjects: dict[str, Subject] = {}
        self.level = "BACKWARD"
        self.subject_levels: dict[str, str] = {}

    # --- schemas ---

    def _prepare(self, body: Any) -> tuple[str, Any, list[dict[str, Any]], list[Any]]:
        """(identity key, document, references, referenced documents) of a request body."""
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise HttpError(422, 42201, "Invalid schema: the body needs a 'schema' string")
        schema_type = body.get("schemaType") or "AVRO"
        if schema_type != "AVRO":
            raise HttpError(422, 42201, f"Invalid schema type {schema_type}: only AVRO here")
        references = body.get("references") or []
        reference_documents: list[Any] = []
        for reference in references:
            reference_documents.extend(self._referenced(reference))
        try:
            document = json.loads(body["schema"])
            named: dict[str, Any] = {}
            for referenced in reference_documents:
                fastavro.parse_schema(referenced, named_schemas=named)
            fastavro.parse_schema(document, named_schemas=named)
        except Exception as error:  # fastavro raises several types for a bad schema
            raise HttpError(
                422, 42201, f"Invalid schema {body['schema']}, details: {error}"
            ) from error
        key = json.dumps([document, references], sort_keys=True, separators=(",", ":"))
        return key, document, references, reference_documents

    def _referenced(self, reference: Any) -> list[Any]:
        if not isinstance(reference, dict) or not {"name", "subject", "version"} <= set(reference):
            raise HttpError(422, 42201, f"Invalid schema reference {reference!r}")
        try:
            stored = self.version(reference["subject"], str(reference["version"]))[1]
        except HttpError as error:
            raise HttpError(
                422, 42201, f"Invalid schema: reference {reference!r}: {error.message}"
            ) from error
        return [*stored.reference_documents, stored.document]

    def schema(self, schema_id: int) -> Stored:
        with self.lock:
            stored = self.schemas.get(schema_id)
        if stored is None:
            raise HttpError(404, 40403, f"Schema {schema_id} not found")
        return stored

    def uses_of(self, schema_id: int, deleted: bool = False) -> list[tuple[str, int]]:
        self.schema(schema_id)
        with self.lock:
            return [
                (name, v.version)
                for name, subject in sorted(self.subjects.items())
                for v in subject.live(deleted)
                if v.schema_id == schema_id
            ]

    # --- subjects ---

    def subject(self, name: str, deleted: bool = False) -> Subject:
        with self.lock:
            subject = self.subjects.get(name)
            if subject is None or not subject.live(deleted):
                raise subject_not_found(name)
            return subject

    def version(self, name: str, version: str, deleted: bool = False) -> tuple[Version, Stored]:
        with self.lock:
            subject = self.subject(name, deleted)
            if version in ("latest", "-1"):
                found = subject.live(deleted)[-1]
            else:
                number = parse_version(version)
                match = [v for v in subject.live(deleted) if v.version == number]
                if not match:
                    raise HttpError(404, 40402, f"Version {number} not found.")
                found = match[0]
            return found, self.schemas[found.schema_id]

    def register(self, name: str, body: Any) -> int:
        key, document, references, reference_documents = self._prepare(body)
        with self.lock:
            subject = self.subjects.setdefault(name, Subject())
            existing = self.ids_by_key.get(key)
            for v in subject.live():
                if v.schema_id == existing:
                    return v.schema_id  # already registered here: no new version
            messages = self.incompatibilities(name, document, reference_documents, None)
            if messages:
                if not subject.versions:
                    del self.subjects[name]
                raise HttpError(
                    409,
                    409,
                    "Schema being registered is incompatible with an earlier schema for subject "
                    f'"{name}", details: [{", ".join(messages)}]',
                )
            if existing is None:
                existing = self.next_id
                self.next_id += 1
                returned = self.rewrite(document) if self.rewrite else document
                self.schemas[existing] = Stored(
                    existing,
                    json.dumps(returned, separators=(",", ":")),
                    document,
                    "AVRO",
                    references,
                    reference_documents,
                )
                self.ids_by_key[key] = existing
            number = max((v.version for v in subject.versions), default=0) + 1
            subject.versions.append(Version(number, existing))
            return existing

    def lookup(self, name: str, body: Any, deleted: bool = False) -> tuple[Version, Stored]:
        with self.lock:
            subject = self.subject(name, deleted)
            key = self._prepare(body)[0]
            schema_id = self.ids_by_key.get(key)
            for v in reversed(subject.live(deleted)):
                if v.schema_id == schema_id:
                    return v, self.schemas[v.schema_id]
        raise HttpError(404, 40403, "Schema not found")

    def delete_subject(self, name: str, permanent: bool) -> list[int]:
        with self.lock:
            subject = self.subjects.get(name)
            if subject is None or not subject.versions:
                raise subject_not_found(name)
            if permanent:
                if subject.live():
                    raise HttpError(
                        404,
                        40405,
                        f"Subject '{name}' was not deleted first before being permanently deleted",
                    )
                del self.subjects[name]
                self.subject_levels.pop(name, None)
                return [v.version for v in subject.versions]
            if not subject.live():
                raise HttpError(
                    404,
                    40404,
                    f"Subject '{name}' was soft deleted.Set permanent=true to delete permanently",
                )
            for v in subject.versions:
                v.deleted = True
            return [v.version for v in subject.versions]

    def delete_version(self, name: str, version: str, permanent: bool) -> int:
        with self.lock:
            found, _ = self.version(name, version, deleted=permanent)
            subject = self.subjects[name]
            if permanent:
                if not found.deleted:
                    raise HttpError(
                        404,
                        40407,
                        f"Subject '{name}' Version {found.version} was not deleted first "
                        "before being permanently deleted",
                    )
                subject.versions.remove(found)
            else:
                found.deleted = True
            return found.version

    # --- compatibility ---

    def level_of(self, name: str) -> str:
        with self.lock:
            return self.subject_levels.get(name, self.level)

    def incompatibilities(
        self,
        name: str,
        document: Any,
        reference_documents: list[Any],
        against: list[Version] | None,
    ) -> list[str]:
        """What makes `document` incompatible with the subject's versions under its level."""
        level = self.level_of(name)
        if level == "NONE":
            return []
        with self.lock:
            subject = self.subjects.get(name)
            live = subject.live() if subject else []
            if against is None:
                against = live if level.endswith("_TRANSITIVE") else live[-1:]
            olds = [(v.version, self.schemas[v.schema_id]) for v in against]
        messages = []
        for number, old in olds:
            pairs = []
            if level.startswith(("BACKWARD", "FULL")):  # the new schema reads the old data
                pairs.append(
                    (
                        "new schema cannot read",
                        old.document,
                        old.reference_documents,
                        document,
                        reference_documents,
                    )
                )
            if level.startswith(("FORWARD", "FULL")):  # the old schema reads the new data
                pairs.append(
                    (
                        "old schema cannot read",
                        document,
                        reference_documents,
                        old.document,
                        old.reference_documents,
                    )
                )
            for what, writer, writer_refs, reader, reader_refs in pairs:
                try:
                    problems = find_problems(
                        writer,
                        reader,
                        writer_references=writer_refs,
                        reader_references=reader_refs,
                    )
                except InvalidSchema as error:
                    raise HttpError(422, 42201, f"Invalid schema: {error}") from error
                messages.extend(f"{{{what} version {number}: {problem}}}" for problem in problems)
        if messages:
            messages.append(f"{{compatibility: '{level}'}}")
        return messages

    def test_compatibility(
        self, name: str, version: str | None, body: Any
    ) -> tuple[bool, list[str]]:
        _, document, _, reference_documents = self._prepare(body)
        with self.lock:
            if version is None:
                subject = self.subjects.get(name)
                against = None if subject and subject.live() else []
            else:
                against = [self.version(name, version)[0]]
        messages = self.incompatibilities(name, document, reference_documents, against)
        return not messages, messages


def parse_version(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= 2**31 - 1:
        raise HttpError(
            422,
            42202,
            f"The specified version '{text}' is not a valid version id. Allowed values are "
            'between [1, 2^31-1] and the string "latest"',
        )
    return number


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() == "true"


def _registered(version: Version, stored: Stored, subject: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subject": subject,
        "version": version.version,
        "id": stored.schema_id,
        "schema": stored.text,
    }
    if stored.schema_type != "AVRO":
        out["schemaType"] = stored.schema_type
    if stored.references:
        out["references"] = stored.references
    return out


Route = tuple[str, re.Pattern[str], Callable[..., Any]]


class SchemaRegistryServer:
    """The HTTP face of a Registry on a free loopback port; a context manager."""

    def __init__(
        self,
        *,
        id_base: int = 100001,
        auth: tuple[str, str] | None = None,
        rewrite: Callable[[Any], Any] | None = None,
        host: str = "127.0.0.1",
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.registry = Registry(id_base, rewrite)
        self.tls: ssl.SSLContext | None = None
        if tls is not None:  # (certificate file, key file): serve https
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*tls)
        self.auth = auth
        self.host = host
        self.port = 0
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of each answered request
        self.mode = "up"  # up, refuse, 503, hang
        self._recovered = threading.Event()
        self._recovered.set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.routes: list[Route] = self._routes()

    # --- lifecycle ---

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> SchemaRegistryServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        httpd = _QuietServer((self.host, self.port), handler)
        if self.tls is not None:
            httpd.socket = self.tls.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def _close_listener(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def stop(self) -> None:
        self._recovered.set()  # release hanging handlers
        self._close_listener()

    def __enter__(self) -> SchemaRegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- outages ---

    def go_down(self, mode: str = "refuse") -> None:
        """refuse: the port is closed (connection refused; open connections are dropped);
        503: every request gets 503 {"error_code": 50003}; hang: requests never get an answer."""
        if mode not in ("refuse", "503", "hang"):
            raise ValueError(mode)
        with self._lock:
            self.mode = mode
            if mode == "hang":
                self._recovered.clear()
            if mode == "refuse":
                self._close_listener()

    def come_back(self) -> None:
        with self._lock:
            was = self.mode
            self.mode = "up"
            self._recovered.set()
            if was == "refuse":
                self.start()  # the same port again

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    # --- routing ---

    def _routes(self) -> list[Route]:
        r = self.registry
        s = r"(?P<subject>[^/]+)"
        v = r"(?P<version>[^/]+)"

        def compile_(method: str, pattern: str, fn: Callable[..., Any]) -> Route:
            return method, re.compile(f"^{pattern}$"), fn

        return [
            compile_("GET", "/", lambda q, b: {}),
            compile_("GET", "/schemas/types", lambda q, b: ["AVRO"]),
            compile_("GET", "/schemas", self._all_schemas),
            compile_("GET", r"/schemas/ids/(?P<schema_id>-?\d+)", self._schema_by_id),
            compile_(
                "GET",
                r"/schemas/ids/(?P<schema_id>-?\d+)/schema",
                lambda q, b, schema_id: r.schema(int(schema_id)).document,
            ),
            compile_(
                "GET",
                r"/schemas/ids/(?P<schema_id>-?\d+)/subjects",
                lambda q, b, schema_id: sorted(
                    {n for n, _ in r.uses_of(int(schema_id), _flag(q, "deleted"))}
                ),
            ),
            compile_(
                "GET",
                r"/schemas/ids/(?P<schema_id>-?\d+)/versions",
                lambda q, b, schema_id: [
                    {"subject": n, "version": ver}
                    for n, ver in r.uses_of(int(schema_id), _flag(q, "deleted"))
                ],
            ),
            compile_("GET", "/subjects", self._subjects),
            compile_(
                "GET",
                f"/subjects/{s}/versions",
                lambda q, b, subject: [
                    ver.version
                    for ver in r.subject(subject, _flag(q, "deleted")).live(_flag(q, "deleted"))
                ],
            ),
            compile_("GET", f"/subjects/{s}/versions/{v}", self._get_version),
            compile_(
                "GET",
                f"/subjects/{s}/versions/{v}/schema",
                lambda q, b, subject, version: (
                    r.version(subject, version, _flag(q, "deleted"))[1].document
                ),
            ),
            compile_("GET", f"/subjects/{s}/versions/{v}/referencedby", self._referenced_by),
            compile_(
                "POST",
                f"/subjects/{s}/versions",
                lambda q, b, subject: {"id": r.register(subject, b)},
            ),
            compile_(
                "POST",
                f"/subjects/{s}",
                lambda q, b, subject: _registered(
                    *r.lookup(subject, b, _flag(q, "deleted")), subject
                ),
            ),
            compile_(
                "DELETE",
                f"/subjects/{s}",
                lambda q, b, subject: r.delete_subject(subject, _flag(q, "permanent")),
            ),
            compile_(
                "DELETE",
                f"/subjects/{s}/versions/{v}",
                lambda q, b, subject, version: r.delete_version(
                    subject, version, _flag(q, "permanent")
                ),
            ),
            compile_("POST", f"/compatibility/subjects/{s}/versions/{v}", self._compatibility),
            compile_("POST", f"/compatibility/subjects/{s}/versions", self._compatibility),
            compile_("GET", "/config", lambda q, b: {"compatibilityLevel": r.level}),
            compile_("PUT", "/config", lambda q, b: self._set_level(None, b)),
            compile_("GET", f"/config/{s}", self._get_subject_level),
            compile_("PUT", f"/config/{s}", lambda q, b, subject: self._set_level(subject, b)),
            compile_("DELETE", f"/config/{s}", self._delete_subject_level),
            compile_("GET", "/mode", lambda q, b: {"mode": "READWRITE"}),
            compile_("GET", f"/mode/{s}", lambda q, b, subject: {"mode": "READWRITE"}),
        ]

    def _all_schemas(self, query: dict[str, list[str]], body: Any) -> Any:
        r = self.registry
        with r.lock:
            return [
                _registered(ver, r.schemas[ver.schema_id], name)
                for name, subject in sorted(r.subjects.items())
                for ver in subject.live(_flag(query, "deleted"))
            ]

    def _schema_by_id(self, query: dict[str, list[str]], body: Any, schema_id: str) -> Any:
        # ?subject= (contexts), ?format= and ?reference_format= are accepted and ignored
        stored = self.registry.schema(int(schema_id))
        out: dict[str, Any] = {"schema": stored.text}
        if stored.schema_type != "AVRO":
            out["schemaType"] = stored.schema_type
        if stored.references:
            out["references"] = stored.references
        if _flag(query, "fetchMaxId"):
            with self.registry.lock:
                out["maxId"] = max(self.registry.schemas)
        return out

    def _subjects(self, query: dict[str, list[str]], body: Any) -> Any:
        prefix = query.get("subjectPrefix", [""])[-1]
        deleted = _flag(query, "deleted")
        with self.registry.lock:
            return sorted(
                name
                for name, subject in self.registry.subjects.items()
                if subject.live(deleted) and name.startswith(prefix)
            )

    def _get_version(
        self, query: dict[str, list[str]], body: Any, subject: str, version: str
    ) -> Any:
        found, stored = self.registry.version(subject, version, _flag(query, "deleted"))
        return _registered(found, stored, subject)

    def _referenced_by(
        self, query: dict[str, list[str]], body: Any, subject: str, version: str
    ) -> Any:
        found, _ = self.registry.version(subject, version)
        with self.registry.lock:
            return sorted(
                stored.schema_id
                for stored in self.registry.schemas.values()
                if any(
                    ref["subject"] == subject and int(ref["version"]) == found.version
                    for ref in stored.references
                )
            )

    def _compatibility(
        self, query: dict[str, list[str]], body: Any, subject: str, version: str | None = None
    ) -> Any:
        compatible, messages = self.registry.test_compatibility(subject, version, body)
        out: dict[str, Any] = {"is_compatible": compatible}
        if _flag(query, "verbose"):
            out["messages"] = messages
        return out

    def _set_level(self, subject: str | None, body: Any) -> Any:
        level = body.get("compatibility") if isinstance(body, dict) else None
        if not isinstance(level, str) or level.upper() not in LEVELS:
            raise HttpError(422, 42203, "Invalid compatibility level")
        with self.registry.lock:
            if subject is None:
                self.registry.level = level.upper()
            else:
                self.registry.subject_levels[subject] = level.upper()
        return {"compatibility": level.upper()}

    def _get_subject_level(self, query: dict[str, list[str]], body: Any, subject: str) -> Any:
        with self.registry.lock:
            level = self.registry.subject_levels.get(subject)
            if level is None and _flag(query, "defaultToGlobal"):
                level = self.registry.level
        if level is None:
            raise HttpError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return {"compatibilityLevel": level}

    def _delete_subject_level(self, query: dict[str, list[str]], body: Any, subject: str) -> Any:
        with self.registry.lock:
            level = self.registry.subject_levels.pop(subject, None)
        if level is None:
            raise HttpError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return {"compatibilityLevel": level}

    def dispatch(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query)
        for route_method, pattern, fn in self.routes:
            match = pattern.match(path)
            if match and route_method == method:
                params = {k: unquote(val) for k, val in match.groupdict().items()}
                parsed: Any = None
                if body:
                    try:
                        parsed = json.loads(body)
                    except ValueError:
                        return 400, {"error_code": 400, "message": "Unexpected character: JSON"}
                try:
                    return 200, fn(query, parsed, **params)
                except HttpError as error:
                    return error.status, {"error_code": error.error_code, "message": error.message}
        allowed = [m for m, pattern, _ in self.routes if pattern.match(path)]
        if allowed:
            return 405, {"error_code": 405, "message": "HTTP 405 Method Not Allowed"}
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout, TLS refused) is what the outage tests want


class _Handler(BaseHTTPRequestHandler):
    owner: SchemaRegistryServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in one segment, no delayed-ACK stall
    wbufsize = 1 << 16  # flushed after each request by handle_one_request

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        mode = owner.mode
        if mode == "refuse":  # a connection that outlived the listener: drop it, no answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "hang":
            owner._recovered.wait()
            self.close_connection = True
            return
        if mode == "503":
            self._answer(503, {"error_code": 50003, "message": "Error while forwarding"})
            return
        if owner.auth is not None and not self._authorized(owner.auth):
            self._answer(
                401,
                {"error_code": 401, "message": "Unauthorized"},
                {"WWW-Authenticate": 'Basic realm="SchemaRegistry"'},
            )
            return
        status, payload = owner.dispatch(self.command, self.path, body)
        owner.requests.append((self.command, self.path))
        self._answer(status, payload)

    def _authorized(self, auth: tuple[str, str]) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == auth

    do_GET = do_POST = do_PUT = do_DELETE = _handle


def running(**kwargs: Any) -> Iterator[SchemaRegistryServer]:
    """For a pytest fixture: `yield from running(id_base=...)`."""
    with SchemaRegistryServer(**kwargs) as server:
        yield server
