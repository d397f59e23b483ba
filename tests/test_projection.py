"""worker.serde.projection: the cheap resolution gives exactly fastavro's resolved record, and is
refused wherever it could differ."""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro
import pytest

from tests.registry_helpers import OURS, as_avro, events, evolved, without
from worker.serde.projection import projection


def _parsed(schema: dict[str, Any]) -> Any:
    return fastavro.parse_schema(copy.deepcopy(schema))


def _both_ways(writer: dict[str, Any], reader: dict[str, Any], record: dict[str, Any]) -> None:
    """Decoded with the projection and with fastavro's resolution: the same record."""
    w, r = _parsed(writer), _parsed(reader)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, w, record)
    resolved = fastavro.schemaless_reader(io.BytesIO(out.getvalue()), w, r)
    plan = projection(w, r)
    assert plan is not None
    projected = fastavro.schemaless_reader(io.BytesIO(out.getvalue()), w, None)
    plan(projected)
    assert projected == resolved
    assert list(projected) != [] and set(projected) == {f["name"] for f in reader["fields"]}


def test_an_added_optional_field_is_dropped_as_resolution_skips_it() -> None:
    for number, event in enumerate(events(12)):
        value = None if number % 2 else f"EHR-{number}"
        _both_ways(evolved(), OURS, {**as_avro(event.model_dump()), "source_system": value})
    assert projection(_parsed(evolved()), _parsed(OURS)).drop == ("source_system",)  # type: ignore[union-attr]


def test_a_missing_field_with_a_default_gets_the_default() -> None:
    older = without("encounter_id")
    for event in events(12):
        record = {k: v for k, v in as_avro(event.model_dump()).items() if k != "encounter_id"}
        _both_ways(older, OURS, record)
    assert projection(_parsed(older), _parsed(OURS)).defaults == (("encounter_id", None),)  # type: ignore[union-attr]


def _small(*extra: dict[str, Any], name: str = "R") -> dict[str, Any]:
    fields = [{"name": "a", "type": "string"}, {"name": "n", "type": "int"}, *extra]
    return {"type": "record", "name": name, "namespace": "x", "fields": fields}


@pytest.mark.parametrize(
    "field",
    [
        {"name": "s", "type": "string", "default": "none"},
        {"name": "i", "type": "long", "default": 7},
        {"name": "b", "type": "boolean", "default": False},
        {"name": "u", "type": ["null", "int"], "default": None},
    ],
    ids=["string", "long", "boolean", "null union"],
)
def test_plain_defaults_of_every_kind(field: dict[str, Any]) -> None:
    _both_ways(_small(), _small(field), {"a": "x", "n": 3})


PAYER_PLUS = copy.deepcopy(OURS)
next(f for f in PAYER_PLUS["fields"] if f["name"] == "payer")["type"]["fields"].append(
    {"name": "group", "type": ["null", "string"], "default": None}
)


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        (PAYER_PLUS, OURS),  # a nested record changed
        (
            _small(),
            _small({"name": "d", "type": {"type": "int", "logicalType": "date"}, "default": 0}),
        ),
        (_small(), _small({"name": "c", "type": "string", "aliases": ["old"], "default": ""})),
        (_small(), _small({"name": "z", "type": "int"})),  # no default: not even readable
        (  # the writer's added field defines a named type
            _small({"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A"]}}),
            _small(),
        ),
        (  # a promotion: int written, long read
            _small(),
            {
                **_small(),
                "fields": [{"name": "a", "type": "string"}, {"name": "n", "type": "long"}],
            },
        ),
        (_small(name="R"), _small(name="Other")),
    ],
    ids=["nested", "logical default", "alias", "no default", "named type", "promotion", "name"],
)
def test_anything_else_is_left_to_fastavro(writer: dict[str, Any], reader: dict[str, Any]) -> None:
    assert projection(_parsed(writer), _parsed(reader)) is None
