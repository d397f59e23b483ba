"""worker.serde.avro_compat against the Avro rules and, above all, against what fastavro does.

The cross-check: for a writer/reader pair, "no problems" must mean that fastavro's
schemaless_reader(writer, reader) decodes records written with the writer, and each problem must
make the decoding of some record fail. Records are encoded here from the writer schema directly
(so a union branch or enum symbol is chosen exactly); a problem's writer-side route (its steps)
gives the record that should fail.
"""

from __future__ import annotations

import copy
import io
import json
import random
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.serde.avro_compat import InvalidSchema, Problem, find_problems, reader_problems

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
CHARGE_EVENT: dict[str, Any] = json.loads((SCHEMAS / "charge_event.avsc").read_text())
PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]


# --- an Avro binary encoder driven by the writer schema and a route ----------------------------


def _zigzag(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Encoder:
    """Writes one record of a (fastavro-parsed) writer schema, following `steps` where given."""

    def __init__(self, writer: Any, rng: random.Random, depth_limit: int = 5) -> None:
        self.named: dict[str, Any] = {}
        self.schema = fastavro.parse_schema(writer, named_schemas=self.named)
        self.rng = rng
        self.depth_limit = depth_limit

    def record(self, steps: tuple[Any, ...] = ()) -> bytes:
        out = bytearray()
        self.write(self.schema, steps, 0, out)
        return bytes(out)

    def write(self, schema: Any, steps: tuple[Any, ...], depth: int, out: bytearray) -> None:
        head = steps[0] if steps else None
        rest = steps[1:]
        if isinstance(schema, str):
            if schema in self.named:
                self.write(self.named[schema], steps, depth, out)
            else:
                self.primitive(schema, {}, out)
            return
        if isinstance(schema, list):
            if head is not None and head[0] == "branch":
                index, rest_here = head[1], rest
            else:
                rest_here = steps
                deep = depth >= self.depth_limit
                index = schema.index("null") if deep and "null" in schema else None
                if index is None:
                    index = 0 if deep else self.rng.randrange(len(schema))
            out += _zigzag(index)
            self.write(schema[index], rest_here, depth + 1, out)
            return
        kind = schema["type"]
        if kind in PRIMITIVES:
            self.primitive(kind, schema, out)
        elif kind in ("record", "error"):
            for f in schema["fields"]:
                if head is not None and head == ("field", f["name"]):
                    self.write(f["type"], rest, depth + 1, out)
                else:
                    self.write(f["type"], (), depth + 1, out)
        elif kind == "enum":
            if head is not None and head[0] == "symbol":
                out += _zigzag(schema["symbols"].index(head[1]))
            else:
                out += _zigzag(self.rng.randrange(len(schema["symbols"])))
        elif kind == "fixed":
            out += bytes(self.rng.randrange(256) for _ in range(schema["size"]))
        elif kind in ("array", "map"):
            child = schema["items"] if kind == "array" else schema["values"]
            wanted = head is not None and head[0] in ("items", "values")
            count = 1 if wanted else (0 if depth >= self.depth_limit else self.rng.randrange(3))
            if count:
                out += _zigzag(count)
                for _ in range(count):
                    if kind == "map":
                        self.primitive("string", {}, out)
                    self.write(child, rest if wanted else (), depth + 1, out)
            out += _zigzag(0)
        else:
            raise AssertionError(f"unexpected schema {schema!r}")

    def primitive(self, kind: str, schema: dict[str, Any], out: bytearray) -> None:
        rng = self.rng
        if kind == "boolean":
            out.append(rng.randrange(2))
        elif kind in ("int", "long"):
            low = 0 if "logicalType" in schema else -(2**20)  # dates before year 1 do not decode
            out += _zigzag(rng.randrange(low, 2**20))
        elif kind == "float":
            out += struct.pack("<f", rng.uniform(-1e3, 1e3))
        elif kind == "double":
            out += struct.pack("<d", rng.uniform(-1e6, 1e6))
        elif kind in ("bytes", "string"):
            data = "".join(rng.choice("abcxyz") for _ in range(rng.randrange(4))).encode()
            if schema.get("logicalType") == "uuid":
                data = str(__import__("uuid").UUID(int=rng.getrandbits(128))).encode()
            out += _zigzag(len(data)) + data
        elif kind != "null":
            raise AssertionError(kind)


def decode_error(body: bytes, writer: Any, reader: Any) -> Exception | None:
    """None when fastavro decodes `body` (written with writer) with the reader schema."""
    try:
        fastavro.schemaless_reader(
            io.BytesIO(body), fastavro.parse_schema(writer), fastavro.parse_schema(reader)
        )
    except Exception as error:  # any failure of the decoder is what is looked for
        return error
    return None


def cross_check(writer: Any, reader: Any, records: int = 25, seed: int = 0) -> list[Problem]:
    """Asserts that avro_compat's verdict is fastavro's; returns the problems."""
    problems = find_problems(writer, reader)
    encoder = Encoder(writer, random.Random(seed))
    # the encoder writes valid records: the writer alone reads each one back to the last byte
    for _ in range(3):
        body = encoder.record()
        stream = io.BytesIO(body)
        fastavro.schemaless_reader(stream, fastavro.parse_schema(writer), None)
        assert stream.tell() == len(body)
    if not problems:
        for _ in range(records):
            error = decode_error(encoder.record(), writer, reader)
            assert error is None, f"no problems found, but fastavro fails: {error!r}"
    for problem in problems:
        error = decode_error(encoder.record(problem.steps), writer, reader)
        assert error is not None, f"fastavro decodes the record of problem {problem}"
    return problems


# --- the rules, one by one ---------------------------------------------------------------------


def evolved(**changes: Any) -> dict[str, Any]:
    schema = copy.deepcopy(CHARGE_EVENT)
    for name in changes.pop("drop", []):
        schema["fields"] = [f for f in schema["fields"] if f["name"] != name]
    schema["fields"].extend(changes.pop("add", []))
    assert not changes
    return schema


def field_of(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_our_schemas_read_themselves() -> None:
    for path in SCHEMAS.glob("*.avsc"):
        schema = json.loads(path.read_text())
        assert cross_check(schema, schema) == []


def test_extra_optional_writer_field_is_skipped() -> None:
    writer = evolved(add=[{"name": "source_system", "type": ["null", "string"], "default": None}])
    assert cross_check(writer, CHARGE_EVENT) == []


def test_extra_required_writer_field_is_skipped_too() -> None:
    writer = evolved(add=[{"name": "batch", "type": "long"}])
    assert cross_check(writer, CHARGE_EVENT) == []


def test_writer_missing_a_field_with_a_reader_default_decodes() -> None:
    assert cross_check(evolved(drop=["encounter_id", "traction"]), CHARGE_EVENT) == []


def test_writer_missing_a_field_without_default() -> None:
    problems = cross_check(evolved(drop=["cpt_code"]), CHARGE_EVENT)
    assert [str(p) for p in problems] == [
        "ChargeEvent.cpt_code: reader field (string) is missing from the writer and has no default"
    ]


def test_reader_with_a_new_required_field() -> None:
    reader = evolved(add=[{"name": "source_system", "type": "string"}])
    assert reader_problems(CHARGE_EVENT, reader) == [
        "ChargeEvent.source_system: reader field (string) is missing from the writer "
        "and has no default"
    ]
    cross_check(CHARGE_EVENT, reader)


def test_new_writer_enum_symbol_names_the_path_and_symbol() -> None:
    writer = copy.deepcopy(CHARGE_EVENT)
    field_of(field_of(writer, "payer")["type"], "plan_type")["type"]["symbols"].append("TRICARE")
    problems = cross_check(writer, CHARGE_EVENT)
    assert [str(p) for p in problems] == [
        "ChargeEvent.payer.plan_type: writer symbol TRICARE unknown to reader "
        "(reader enum PlanType has no default)"
    ]
    # every other record decodes: only records carrying the symbol fail
    encoder = Encoder(writer, random.Random(1))
    body = encoder.record((("field", "payer"), ("field", "plan_type"), ("symbol", "MEDICARE")))
    assert decode_error(body, writer, CHARGE_EVENT) is None


def test_enum_symbol_inside_union_and_array() -> None:
    writer = copy.deepcopy(CHARGE_EVENT)
    traction = field_of(writer, "traction")["type"][1]
    field_of(traction, "body_regions")["type"]["items"]["symbols"].append("COCCYX")
    problems = cross_check(writer, CHARGE_EVENT)
    assert [str(p) for p in problems] == [
        "ChargeEvent.traction.body_regions[]: writer symbol COCCYX unknown to reader "
        "(reader enum BodyRegion has no default)"
    ]
    assert problems[0].steps == (
        ("field", "traction"),
        ("branch", 1),
        ("field", "body_regions"),
        ("items",),
        ("symbol", "COCCYX"),
    )


def test_reader_enum_default_takes_unknown_symbols() -> None:
    writer = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}
    reader = {"type": "enum", "name": "E", "symbols": ["A", "OTHER"], "default": "OTHER"}
    assert cross_check(writer, reader) == []
    assert [p.message for p in cross_check(writer, {**reader, "default": None})] == [
        "writer symbol B unknown to reader (reader enum E has no default)",
        "writer symbol C unknown to reader (reader enum E has no default)",
    ]


def test_reader_removing_an_enum_symbol() -> None:
    reader = copy.deepcopy(CHARGE_EVENT)
    field_of(reader, "performed_by")["type"]["symbols"].remove("ASSISTANT")
    assert reader_problems(CHARGE_EVENT, reader) == [
        "ChargeEvent.performed_by: writer symbol ASSISTANT unknown to reader "
        "(reader enum PerformedBy has no default)"
    ]
    cross_check(CHARGE_EVENT, reader)


@pytest.mark.parametrize("writer", PRIMITIVES)
@pytest.mark.parametrize("reader", PRIMITIVES)
def test_every_pair_of_primitives_as_fastavro(writer: str, reader: str) -> None:
    promotions = {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
    problems = cross_check(writer, reader)
    assert (problems == []) == (writer == reader or (writer, reader) in promotions)
    wrapped = cross_check(
        {"type": "record", "name": "R", "fields": [{"name": "f", "type": writer}]},
        {"type": "record", "name": "R", "fields": [{"name": "f", "type": reader}]},
    )
    assert [p.path for p in wrapped] == (["R.f"] if problems else [])


def test_unions() -> None:
    # a writer union: each branch must resolve; the problem names the branch
    assert [str(p) for p in cross_check(["null", "string"], "string")] == [
        "(root): writer union branch null cannot be read as string"
    ]
    assert cross_check(["int", "string"], ["null", "long", "bytes"]) == []
    assert [p.message for p in cross_check(["int", "boolean"], ["null", "long"])] == [
        "writer union branch boolean matches no branch of reader union [null, long]"
    ]
    # a non-union writer reads into the first reader branch that matches
    assert cross_check("int", ["null", "string", "double"]) == []
    assert [p.message for p in cross_check("int", ["null", "string"])] == [
        "writer int matches no branch of reader union [null, string]"
    ]
    # a union in a field that is optional in the reader
    writer = evolved()
    field_of(writer, "encounter_id")["type"] = "string"
    del field_of(writer, "encounter_id")["default"]
    assert cross_check(writer, CHARGE_EVENT) == []
    reader = evolved()
    field_of(reader, "encounter_id")["type"] = "string"
    del field_of(reader, "encounter_id")["default"]
    assert [str(p) for p in cross_check(CHARGE_EVENT, reader)] == [
        "ChargeEvent.encounter_id: writer union branch null cannot be read as string"
    ]


def test_arrays_and_maps_resolve_their_items_and_values() -> None:
    assert cross_check({"type": "array", "items": "int"}, {"type": "array", "items": "long"}) == []
    assert [
        str(p)
        for p in cross_check({"type": "map", "values": "long"}, {"type": "map", "values": "int"})
    ] == ["(root){}: writer long cannot be read as int"]
    assert [
        p.message
        for p in cross_check({"type": "array", "items": "int"}, {"type": "map", "values": "int"})
    ] == ["writer array<int> cannot be read as map<int>"]


def test_fixed_by_name_and_size() -> None:
    fixed = {"type": "fixed", "name": "md5", "size": 16}
    assert cross_check(fixed, dict(fixed)) == []
    assert [p.message for p in cross_check(fixed, {**fixed, "size": 8})] == [
        "writer fixed md5 has size 16, reader's 8"
    ]
    assert cross_check(fixed, {**fixed, "name": "sha"}) != []
    assert cross_check(fixed, {**fixed, "name": "sha", "aliases": ["md5"]}) == []


def test_record_names_unqualified_and_aliases() -> None:
    writer = {"type": "record", "name": "a.Payer", "fields": [{"name": "id", "type": "string"}]}
    # the same unqualified name in another namespace matches (Avro 1.11, and fastavro)
    assert cross_check(writer, {**writer, "name": "b.Payer"}) == []
    renamed = {**writer, "name": "b.Insurer"}
    assert [p.message for p in cross_check(writer, renamed)] == [
        "writer record a.Payer does not match reader record b.Insurer "
        "(other name, and not one of the reader's aliases)"
    ]
    assert cross_check(writer, {**renamed, "aliases": ["a.Payer"]}) == []
    assert cross_check(writer, {**renamed, "aliases": ["Payer"]}) == []
    # an alias with another namespace is not the writer's name
    assert cross_check(writer, {**renamed, "aliases": ["c.Payer"]}) != []


def test_field_aliases() -> None:
    writer = {"type": "record", "name": "R", "fields": [{"name": "npi", "type": "string"}]}
    reader = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "provider_npi", "type": "string", "aliases": ["npi"]}],
    }
    assert cross_check(writer, reader) == []
    del reader["fields"][0]["aliases"]
    assert reader_problems(writer, reader) == [
        "R.provider_npi: reader field (string) is missing from the writer and has no default"
    ]


def test_logical_types_are_ignored_for_matching() -> None:
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    assert cross_check(millis, "long") == []
    assert cross_check("long", millis) == []
    assert cross_check({"type": "int", "logicalType": "date"}, "long") == []
    assert cross_check(millis, {"type": "long", "logicalType": "timestamp-micros"}) == []
    assert cross_check({"type": "string", "logicalType": "uuid"}, "string") == []
    # decimals of another scale: the spec says they do not match, fastavro decodes the
    # writer's value exactly (documented in worker/avro_compat.py)
    decimal = {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}
    assert cross_check(decimal, {**decimal, "scale": 3}) == []
    assert cross_check({"type": "int", "logicalType": "date"}, "string") != []


def test_named_references_and_namespaces() -> None:
    writer = {
        "type": "record",
        "name": "Visit",
        "namespace": "w",
        "fields": [
            {"name": "a", "type": {"type": "enum", "name": "Kind", "symbols": ["X", "Y"]}},
            {"name": "b", "type": "Kind"},
            {"name": "c", "type": {"type": "array", "items": "w.Kind"}},
        ],
    }
    reader = copy.deepcopy(writer)
    reader["namespace"] = "r"
    reader["fields"][2]["type"]["items"] = "r.Kind"
    reader["fields"][0]["type"]["symbols"] = ["X"]
    problems = cross_check(writer, reader)
    # the enum pair is reported once, where it is first met
    assert [str(p) for p in problems] == [
        "Visit.a: writer symbol Y unknown to reader (reader enum Kind has no default)"
    ]


LINKED = {
    "type": "record",
    "name": "Node",
    "fields": [
        {"name": "value", "type": "int"},
        {"name": "next", "type": ["null", "Node"], "default": None},
    ],
}


def test_recursive_schemas() -> None:
    assert cross_check(LINKED, LINKED) == []
    reader = copy.deepcopy(LINKED)
    reader["fields"][0]["type"] = "long"
    assert cross_check(LINKED, reader) == []
    reader["fields"].append({"name": "label", "type": "string"})
    problems = cross_check(LINKED, reader)
    assert [str(p) for p in problems] == [
        "Node.label: reader field (string) is missing from the writer and has no default"
    ]
    tree = {
        "type": "record",
        "name": "Tree",
        "fields": [
            {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["LEAF", "NODE"]}},
            {"name": "children", "type": {"type": "array", "items": "Tree"}},
        ],
    }
    narrower = copy.deepcopy(tree)
    narrower["fields"][0]["type"]["symbols"] = ["LEAF"]
    assert [p.path for p in cross_check(tree, narrower)] == ["Tree.kind"]


def test_json_text_and_invalid_schemas() -> None:
    assert reader_problems(json.dumps(CHARGE_EVENT), json.dumps(CHARGE_EVENT)) == []
    assert reader_problems('"int"', "long") == []
    with pytest.raises(InvalidSchema, match="writer schema: unknown type name 'Nope'"):
        reader_problems(
            {"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]}, "int"
        )
    with pytest.raises(InvalidSchema, match="reader schema"):
        reader_problems("int", [["int"]])
    with pytest.raises(InvalidSchema, match="not JSON"):
        reader_problems("{nope", "int")


# --- generated pairs ---------------------------------------------------------------------------


def default_for(schema: Any) -> tuple[bool, Any]:
    """A valid default for a field of this type, when one is simple to give."""
    if isinstance(schema, list):
        return (True, None) if schema and schema[0] == "null" else (False, None)
    kind = schema if isinstance(schema, str) else schema["type"]
    simple = {"int": 0, "long": 0, "float": 0.0, "double": 0.0, "string": "", "boolean": False}
    if kind in simple:
        return True, simple[kind]
    if kind == "array":
        return True, []
    if kind == "map":
        return True, {}
    if kind == "enum":
        return True, schema["symbols"][0]
    return False, None


def kind_of(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    return schema if isinstance(schema, str) else str(schema["type"])


@st.composite
def schema_pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    counter = iter(range(10_000))
    symbols_pool = ["A", "B", "C", "D"]

    def name(prefix: str) -> str:
        # records, enums and fixed never share a name: fastavro reads a writer fixed into a
        # reader record of the same name as raw bytes, without complaint
        return f"{prefix}{next(counter)}"

    def gen(depth: int, kinds: list[str] | None = None) -> Any:
        options = kinds or (
            [*PRIMITIVES[1:], "enum", "fixed"]
            if depth >= 3
            else [*PRIMITIVES[1:], "enum", "fixed", "array", "map", "union", "record", "record"]
        )
        kind = draw(st.sampled_from(options))
        if kind in PRIMITIVES:
            return kind
        if kind == "enum":
            count = draw(st.integers(1, 4))
            return {"type": "enum", "name": name("E"), "symbols": symbols_pool[:count]}
        if kind == "fixed":
            return {"type": "fixed", "name": name("F"), "size": draw(st.integers(1, 3))}
        if kind == "array":
            return {"type": "array", "items": gen(depth + 1)}
        if kind == "map":
            return {"type": "map", "values": gen(depth + 1)}
        if kind == "union":
            branch_kinds = draw(
                st.lists(
                    st.sampled_from([*PRIMITIVES, "enum", "fixed", "array", "record"]),
                    min_size=1,
                    max_size=3,
                    unique=True,
                )
            )
            return [gen(depth + 1, [k]) for k in branch_kinds]
        fields = []
        for index in range(draw(st.integers(1, 3))):
            field_type = gen(depth + 1)
            entry: dict[str, Any] = {"name": f"f{index}", "type": field_type}
            has_default, default = default_for(field_type)
            if has_default and draw(st.booleans()):
                entry["default"] = default
            fields.append(entry)
        record: dict[str, Any] = {"type": "record", "name": name("R"), "fields": fields}
        if draw(st.booleans()):
            record["namespace"] = draw(st.sampled_from(["ns.a", "ns.b"]))
        return record

    def mutate(schema: Any, depth: int) -> Any:
        schema = copy.deepcopy(schema)
        here = draw(st.integers(0, 5)) == 0
        kind = kind_of(schema)
        if here:
            choice = draw(st.integers(0, 4))
            if choice == 0 and kind != "union":
                return ["null", schema] if draw(st.booleans()) else [schema, "null"]
            if choice == 1 and kind in PRIMITIVES:
                return draw(st.sampled_from(PRIMITIVES))
            if choice == 2:
                return gen(max(depth, 2))
        if kind == "union":
            branches = [mutate(b, depth + 1) for b in schema]
            if here and len(branches) > 1 and draw(st.booleans()):
                branches.pop(draw(st.integers(0, len(branches) - 1)))
            if here and draw(st.booleans()):
                branches.reverse()
            if len(
                {
                    kind_of(b) if kind_of(b) not in ("record", "enum", "fixed") else b["name"]
                    for b in branches
                }
            ) < len(branches) or any(kind_of(b) == "union" for b in branches):
                return schema  # the mutation made an invalid union: keep the original
            return branches
        if kind == "array":
            schema["items"] = mutate(schema["items"], depth + 1)
        elif kind == "map":
            schema["values"] = mutate(schema["values"], depth + 1)
        elif kind == "enum" and here:
            symbols = list(schema["symbols"])
            action = draw(st.integers(0, 3))
            if action == 0:
                symbols.append("Z")
            elif action == 1 and len(symbols) > 1:
                symbols.pop(draw(st.integers(0, len(symbols) - 1)))
            elif action == 2:
                schema["default"] = symbols[0]
            else:
                schema["aliases"] = [schema["name"]]
                schema["name"] += "x"
            schema["symbols"] = symbols
        elif kind == "fixed" and here:
            schema["size"] += 1
        elif kind == "record":
            new_fields = []
            for entry in schema["fields"]:
                if here and draw(st.integers(0, 3)) == 0:
                    continue  # the reader drops the field
                mutated = mutate(entry["type"], depth + 1)
                if mutated != entry["type"]:
                    entry = {k: v for k, v in entry.items() if k != "default"}
                    entry["type"] = mutated
                    has_default, default = default_for(mutated)
                    if has_default and draw(st.booleans()):
                        entry["default"] = default
                new_fields.append(entry)
            if here:
                action = draw(st.integers(0, 4))
                if action == 0:
                    field_type = gen(2)
                    extra: dict[str, Any] = {"name": "added", "type": field_type}
                    has_default, default = default_for(field_type)
                    if has_default and draw(st.booleans()):
                        extra["default"] = default
                    new_fields.append(extra)
                elif action == 1:
                    schema["namespace"] = "ns.other"
                elif action == 2:
                    schema["name"] += "x"
                elif action == 3 and new_fields:
                    new_fields[0] = {
                        **new_fields[0],
                        "name": "renamed",
                        "aliases": [new_fields[0]["name"]],
                    }
                else:
                    new_fields.reverse()
            schema["fields"] = new_fields
        return schema

    writer = gen(0, ["record", "union", "array", "record"])
    reader = mutate(writer, 0)
    if draw(st.booleans()):
        reader = mutate(reader, 0)
    return writer, reader


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(schema_pairs())
def test_generated_pairs_agree_with_fastavro(pair: tuple[Any, Any]) -> None:
    writer, reader = pair
    cross_check(writer, reader, records=15)
    cross_check(reader, writer, records=15)  # and the other way round
