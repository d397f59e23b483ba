"""The pydantic models and the Avro schemas are one contract: prove they agree field by field."""

from __future__ import annotations

import datetime as dt
import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import BaseModel

from rules.model import ChargeDecision, ChargeEvent, DeadLetter

SCHEMAS = Path(__file__).parent.parent / "schemas"


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return schema


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, nullable) of an annotation such as `str | None`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return annotation, False


def _check_type(avro: Any, annotation: Any, where: str) -> None:
    nullable_avro = isinstance(avro, list)
    if nullable_avro:
        assert avro[0] == "null", f"{where}: nullable union must start with null"
        (avro,) = [t for t in avro if t != "null"]
    inner, nullable_py = _unwrap(annotation)
    assert nullable_avro == nullable_py, f"{where}: nullability differs"
    if isinstance(avro, dict) and avro.get("logicalType") == "date":
        assert inner is dt.date, where
    elif isinstance(avro, dict) and avro.get("logicalType") == "timestamp-millis":
        assert inner is dt.datetime, where
    elif isinstance(avro, dict) and avro["type"] == "record":
        assert isinstance(inner, type) and issubclass(inner, BaseModel), where
        check_record(avro, inner)
    elif isinstance(avro, dict) and avro["type"] == "enum":
        assert issubclass(inner, Enum), where
        assert [m.value for m in inner] == avro["symbols"], f"{where}: enum symbols differ"
    elif isinstance(avro, dict) and avro["type"] == "array":
        assert typing.get_origin(inner) is tuple, f"{where}: arrays are tuples"
        _check_type(avro["items"], typing.get_args(inner)[0], where + "[]")
    else:
        python = {"string": str, "int": int, "long": int, "boolean": bool, "bytes": bytes}[avro]
        base = typing.get_args(inner)[0] if typing.get_origin(inner) is typing.Annotated else inner
        assert base is python, f"{where}: {avro} vs {inner}"


def check_record(avro: dict[str, Any], model: type[BaseModel]) -> None:
    avro_fields = [f["name"] for f in avro["fields"]]
    assert avro_fields == list(model.model_fields), f"{model.__name__}: field names/order"
    for field in avro["fields"]:
        info = model.model_fields[field["name"]]
        where = f"{model.__name__}.{field['name']}"
        _check_type(field["type"], info.annotation, where)
        assert ("default" in field) == (not info.is_required()), f"{where}: optionality"


@pytest.mark.parametrize(
    ("file", "model"),
    [
        ("charge_event.avsc", ChargeEvent),
        ("charge_decision.avsc", ChargeDecision),
        ("dead_letter.v2.avsc", DeadLetter),
    ],
)
def test_model_matches_schema(file: str, model: type[BaseModel]) -> None:
    schema = load(file)
    fastavro.parse_schema(schema)
    check_record(schema, model)


def test_decision_embeds_the_current_charge_event_schema() -> None:
    embedded = next(f for f in load("charge_decision.avsc")["fields"] if f["name"] == "charge")
    assert embedded["type"] == load("charge_event.avsc")


def test_registry_maps_ids_to_schema_files() -> None:
    registry = json.loads((SCHEMAS / "registry.json").read_text())
    assert registry == {
        "1": "charge_event.avsc",
        "2": "charge_decision.avsc",
        "3": "dead_letter.avsc",
        "4": "dead_letter.v2.avsc",
    }
    for name in registry.values():
        assert (SCHEMAS / name).is_file()


def test_schemas_in_registry_are_backward_compatible_with_the_readers() -> None:
    """Every registered writer schema of a record stays readable by the current reader.

    A later version may add optional fields and enum symbols only. This writes a record with
    each registered schema and reads it with the current reader: the newest registered file
    of that record's name (as worker.serde.framing does).
    """
    registry = json.loads((SCHEMAS / "registry.json").read_text())
    newest = {load(n)["name"]: n for _, n in sorted(registry.items(), key=lambda kv: int(kv[0]))}
    readers = {name: fastavro.parse_schema(load(file)) for name, file in newest.items()}
    for name in registry.values():
        writer = fastavro.parse_schema(load(name))
        reader = readers[load(name)["name"]]
        assert fastavro.schema.to_parsing_canonical_form(writer)
        sample = _sample(load(name))
        import io

        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, sample)
        buf.seek(0)
        assert fastavro.schemaless_reader(buf, writer, reader) is not None


def _sample(schema: Any) -> Any:
    if isinstance(schema, list):
        return None
    if isinstance(schema, str):
        return {"string": "x", "int": 1, "long": 1, "boolean": True, "bytes": b"x"}[schema]
    if schema.get("logicalType") == "date":
        return dt.date(2026, 3, 2)
    if schema.get("logicalType") == "timestamp-millis":
        return dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: _sample(f["type"]) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "array":
        return [_sample(schema["items"])]
    return _sample(kind)


def test_dead_letter_v2_only_adds_to_v1() -> None:
    """v2 keeps every v1 field as it was, appends optional fields and enum symbols, and gives
    the enum a default, so a reader of a later version can read symbols it does not know."""
    v1, v2 = load("dead_letter.avsc"), load("dead_letter.v2.avsc")
    assert (v1["name"], v1["namespace"]) == (v2["name"], v2["namespace"])
    old = {f["name"]: f for f in v1["fields"]}
    assert [f["name"] for f in v2["fields"]][: len(old)] == list(old)
    for field in v2["fields"]:
        if field["name"] not in old:
            assert "default" in field and field["type"][0] == "null", field["name"]
        elif field["name"] != "error_kind":
            assert field == old[field["name"]]
    kinds_v1 = old["error_kind"]["type"]
    kinds_v2 = next(f for f in v2["fields"] if f["name"] == "error_kind")["type"]
    assert kinds_v2["symbols"][: len(kinds_v1["symbols"])] == kinds_v1["symbols"]
    assert {"TOO_LARGE", "UNPRODUCIBLE"} <= set(kinds_v2["symbols"])
    assert kinds_v2["default"] in kinds_v1["symbols"]


def test_a_v1_dead_letter_reads_with_the_v2_reader() -> None:
    import io

    v1, v2 = (
        fastavro.parse_schema(load("dead_letter.avsc")),
        fastavro.parse_schema(load("dead_letter.v2.avsc")),
    )
    record = _sample(load("dead_letter.avsc"))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v1, record)
    buf.seek(0)
    read = fastavro.schemaless_reader(buf, v1, v2)
    assert read["value_length"] is None and read["value_sha256"] is None
    assert read["error_kind"] == record["error_kind"]
