"""The test schema registry speaks the documented REST API: shapes, status and error codes."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.schema_registry_server import CONTENT_TYPE, SchemaRegistryServer

RECORD = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}
WITH_B = {**RECORD, "fields": [*RECORD["fields"], {"name": "b", "type": "string"}]}
WITH_C = {
    **RECORD,
    "fields": [*RECORD["fields"], {"name": "c", "type": ["null", "string"], "default": None}],
}


def call(
    server: SchemaRegistryServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    request.add_header("Content-Type", CONTENT_TYPE)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"] == CONTENT_TYPE
        payload = json.loads(error.read())
        assert set(payload) == {"error_code", "message"}
        return error.code, payload


def schema(document: Any) -> dict[str, str]:
    return {"schema": json.dumps(document)}


def test_schemas_and_subjects(server: SchemaRegistryServer) -> None:
    assert call(server, "GET", "/schemas/types") == (200, ["AVRO"])
    assert call(server, "POST", "/subjects/s1-value/versions", schema(RECORD)) == (
        200,
        {"id": 100001},
    )
    assert call(server, "POST", "/subjects/s2-value/versions?normalize=false", schema(RECORD)) == (
        200,
        {"id": 100001},
    )
    status, got = call(server, "GET", "/schemas/ids/100001?subject=s1-value&fetchMaxId=true")
    assert status == 200 and json.loads(got["schema"]) == RECORD and got["maxId"] == 100001
    assert call(server, "GET", "/schemas/ids/100001/schema") == (200, RECORD)
    assert call(server, "GET", "/schemas/ids/100001/subjects") == (200, ["s1-value", "s2-value"])
    assert call(server, "GET", "/schemas/ids/100001/versions") == (
        200,
        [{"subject": "s1-value", "version": 1}, {"subject": "s2-value", "version": 1}],
    )
    assert call(server, "GET", "/schemas/ids/5") == (
        404,
        {"error_code": 40403, "message": "Schema 5 not found"},
    )
    assert call(server, "GET", "/subjects") == (200, ["s1-value", "s2-value"])
    assert call(server, "GET", "/subjects?subjectPrefix=s2") == (200, ["s2-value"])
    assert call(server, "GET", "/subjects/s1-value/versions") == (200, [1])
    status, latest = call(server, "GET", "/subjects/s1-value/versions/latest")
    assert latest["subject"] == "s1-value" and latest["version"] == 1 and latest["id"] == 100001
    assert call(server, "GET", "/subjects/s1-value/versions/1/schema") == (200, RECORD)
    assert call(server, "GET", "/subjects/nope/versions")[1]["error_code"] == 40401
    assert call(server, "GET", "/subjects/s1-value/versions/7") == (
        404,
        {"error_code": 40402, "message": "Version 7 not found."},
    )
    assert call(server, "GET", "/subjects/s1-value/versions/0")[1]["error_code"] == 42202
    # look-up
    status, found = call(server, "POST", "/subjects/s1-value", schema(RECORD))
    assert (status, found["id"], found["version"]) == (200, 100001, 1)
    assert call(server, "POST", "/subjects/s1-value", schema(WITH_C))[1]["error_code"] == 40403
    assert call(server, "POST", "/subjects/nope", schema(RECORD))[1]["error_code"] == 40401
    # invalid schemas
    assert call(server, "POST", "/subjects/x/versions", {"schema": "{"})[1]["error_code"] == 42201
    assert call(server, "POST", "/subjects/x/versions", {"nothing": 1})[1]["error_code"] == 42201
    assert (
        call(server, "POST", "/subjects/x/versions", {"schema": "{}", "schemaType": "PROTOBUF"})[1][
            "error_code"
        ]
        == 42201
    )
    assert call(server, "GET", "/nothing/here") == (
        404,
        {"error_code": 404, "message": "HTTP 404 Not Found"},
    )


def test_compatibility_and_config(server: SchemaRegistryServer) -> None:
    call(server, "POST", "/subjects/s-value/versions", schema(RECORD))
    assert call(server, "GET", "/config") == (200, {"compatibilityLevel": "BACKWARD"})
    assert call(
        server, "POST", "/compatibility/subjects/s-value/versions/latest", schema(WITH_C)
    ) == (
        200,
        {"is_compatible": True},
    )
    status, verdict = call(
        server, "POST", "/compatibility/subjects/s-value/versions/1?verbose=true", schema(WITH_B)
    )
    assert status == 200 and verdict["is_compatible"] is False
    assert any("R.b" in message for message in verdict["messages"])
    status, refused = call(server, "POST", "/subjects/s-value/versions", schema(WITH_B))
    assert (status, refused["error_code"]) == (409, 409)
    assert 'incompatible with an earlier schema for subject "s-value"' in refused["message"]
    # FORWARD: the old schema must read the new one's data; WITH_B is fine, dropping `a` is not
    assert call(server, "PUT", "/config/s-value", {"compatibility": "FORWARD"}) == (
        200,
        {"compatibility": "FORWARD"},
    )
    assert call(server, "GET", "/config/s-value") == (200, {"compatibilityLevel": "FORWARD"})
    assert call(server, "POST", "/subjects/s-value/versions", schema(WITH_B)) == (
        200,
        {"id": 100002},
    )
    only_b = {**RECORD, "fields": [{"name": "b", "type": "string"}]}
    assert call(server, "POST", "/subjects/s-value/versions", schema(only_b))[0] == 409
    assert call(server, "DELETE", "/config/s-value") == (200, {"compatibilityLevel": "FORWARD"})
    assert call(server, "GET", "/config/s-value")[1]["error_code"] == 40408
    assert call(server, "GET", "/config/s-value?defaultToGlobal=true") == (
        200,
        {"compatibilityLevel": "BACKWARD"},
    )
    assert call(server, "PUT", "/config", {"compatibility": "SIDEWAYS"})[1]["error_code"] == 42203
    assert call(server, "PUT", "/config", {"compatibility": "NONE"}) == (
        200,
        {"compatibility": "NONE"},
    )
    assert call(server, "POST", "/subjects/s-value/versions", schema(only_b)) == (
        200,
        {"id": 100003},
    )


def test_deletes(server: SchemaRegistryServer) -> None:
    call(server, "PUT", "/config", {"compatibility": "NONE"})
    call(server, "POST", "/subjects/s-value/versions", schema(RECORD))
    call(server, "POST", "/subjects/s-value/versions", schema(WITH_B))
    assert call(server, "DELETE", "/subjects/s-value?permanent=true")[1]["error_code"] == 40405
    assert call(server, "DELETE", "/subjects/s-value/versions/2") == (200, 2)
    assert call(server, "GET", "/subjects/s-value/versions") == (200, [1])
    assert call(server, "DELETE", "/subjects/s-value") == (200, [1, 2])
    assert call(server, "GET", "/subjects") == (200, [])
    assert call(server, "GET", "/subjects?deleted=true") == (200, ["s-value"])
    assert call(server, "GET", "/schemas/ids/100002")[0] == 200  # ids outlive a soft delete
    assert call(server, "DELETE", "/subjects/s-value?permanent=true") == (200, [1, 2])
    assert call(server, "DELETE", "/subjects/s-value")[1]["error_code"] == 40401
    # registering again after a delete: the same id, versions start anew only after a hard one
    assert call(server, "POST", "/subjects/s-value/versions", schema(RECORD)) == (
        200,
        {"id": 100001},
    )
    assert call(server, "GET", "/subjects/s-value/versions") == (200, [1])


def test_basic_auth_and_outages() -> None:
    with SchemaRegistryServer(auth=("u", "p")) as server:
        status, refused = call(server, "GET", "/subjects")
        assert (status, refused) == (401, {"error_code": 401, "message": "Unauthorized"})
        good = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
        bad = {"Authorization": "Basic " + base64.b64encode(b"u:x").decode()}
        assert call(server, "GET", "/subjects", headers=good) == (200, [])
        assert call(server, "GET", "/subjects", headers=bad)[0] == 401
        server.go_down("503")
        assert call(server, "GET", "/subjects", headers=good) == (
            503,
            {"error_code": 50003, "message": "Error while forwarding"},
        )
        server.come_back()
        server.go_down("refuse")
        with pytest.raises(urllib.error.URLError):
            call(server, "GET", "/subjects", headers=good)
        server.come_back()
        assert call(server, "GET", "/subjects", headers=good) == (200, [])
