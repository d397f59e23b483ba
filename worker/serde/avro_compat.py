"""Can data written with one Avro schema be read with another? (Avro 1.11, "Schema Resolution")

`reader_problems(writer, reader)` lists, for a writer schema and a reader schema (JSON text or
the parsed JSON: dict, list or str), every place where records written with the writer cannot be
read with the reader, each with its path: `ChargeEvent.payer.plan_type: writer symbol X unknown
to reader`. An empty list means every record the writer can write resolves to the reader.

The rules are the specification's:

* two schemas *match* when both are the same primitive, or the writer's promotes to the reader's
  (int → long, float, double; long → float, double; float → double; string ↔ bytes); both are
  records, enums or fixed whose unqualified names match (or the writer's name is one of the
  reader's aliases; fixed also by size); both are arrays whose items match, or maps whose values
  match; or either is a union;
* records: fields are matched by name (or by a reader field's alias); a reader field the writer
  lacks needs a default; a writer field the reader lacks is skipped;
* enums: a writer symbol the reader lacks is a problem unless the reader enum has a default;
* unions: each writer branch must resolve to the first reader branch it matches (or to the reader
  when that is not a union); a non-union writer resolves to the first reader branch it matches;
* logical types are ignored: the underlying types are matched;
* named types may be referenced by name and may be recursive.

Where the specification leaves room, the choice is fastavro's (the worker decodes with it), so
that "no problems" means `fastavro.schemaless_reader(body, writer, reader)` decodes every record
the writer writes and each problem fails the decoding of some record (tests/test_avro_compat.py
checks both against fastavro): names match unqualified, as the 1.11 text says; and decimals of
another precision or scale are not a problem (the spec wants them equal; fastavro decodes the
writer's value exactly, with the writer's scale).

A union writer branch or enum symbol the reader cannot take fails only the records that carry
it: the problem names the branch or symbol.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InvalidSchema", "Problem", "find_problems", "reader_problems"]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
_NAMED = frozenset({"record", "enum", "fixed"})

# One step of the writer-side route to a problem: ("field", name), ("branch", index) of a writer
# union, ("items",) of an array, ("values",) of a map, ("symbol", name) of an enum.
Step = tuple[str, ...] | tuple[str, int]


class InvalidSchema(ValueError):
    """The schema is not valid Avro (unknown type name, missing attribute, nested union, ...)."""


@dataclass(frozen=True)
class Problem:
    path: str  # e.g. ChargeEvent.payer.plan_type; "(root)" for the top of a non-record schema
    message: str
    steps: tuple[Step, ...] = ()  # the writer-side route to the place, for finding a record

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(eq=False)
class _Field:
    name: str
    type: _Node
    aliases: tuple[str, ...]
    has_default: bool


@dataclass(eq=False)
class _Node:
    kind: str  # a primitive, or record, enum, fixed, array, map, union
    name: str = ""  # full name of a named type
    alias_fullnames: frozenset[str] = frozenset()
    alias_short: frozenset[str] = frozenset()  # aliases written without a namespace
    fields: list[_Field] = field(default_factory=list)
    symbols: tuple[str, ...] = ()
    enum_default: str | None = None
    size: int = 0
    child: _Node | None = None  # array items, map values
    branches: list[_Node] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def reader_problems(
    writer: Any,
    reader: Any,
    *,
    writer_references: Sequence[Any] = (),
    reader_references: Sequence[Any] = (),
) -> list[str]:
    """Every place where data written with `writer` cannot be read with `reader` ([] = none).

    `writer` and `reader` are Avro schemas as JSON text or parsed JSON (dict, list or str). A
    schema that names types defined elsewhere (a schema registry's `references`) gets those
    schemas in `*_references`, each before the ones that use it. Raises InvalidSchema when a
    schema is not valid Avro.
    """
    problems = find_problems(
        writer, reader, writer_references=writer_references, reader_references=reader_references
    )
    return [str(problem) for problem in problems]


def find_problems(
    writer: Any,
    reader: Any,
    *,
    writer_references: Sequence[Any] = (),
    reader_references: Sequence[Any] = (),
) -> list[Problem]:
    """As reader_problems, with each problem's path and writer-side route kept apart."""
    writer_root = _parse_root(writer, writer_references, "writer")
    reader_root = _parse_root(reader, reader_references, "reader")
    resolver = _Resolver()
    resolver.resolve(writer_root, reader_root, "", ())
    return resolver.problems


# --- parsing ---------------------------------------------------------------------------------


def _parse_root(schema: Any, references: Sequence[Any], role: str) -> _Node:
    parser = _Parser()
    try:
        for index, referenced in enumerate(references):
            try:
                parser.parse(_loads(referenced), "")
            except InvalidSchema as error:
                raise InvalidSchema(f"reference {index}: {error}") from error
        return parser.parse(_loads(schema), "")
    except InvalidSchema as error:
        raise InvalidSchema(f"{role} schema: {error}") from error


def _loads(schema: Any) -> Any:
    if isinstance(schema, str) and schema.lstrip()[:1] in ("{", "[", '"'):
        try:
            return json.loads(schema)
        except ValueError as error:
            raise InvalidSchema(f"not JSON: {error}") from error
    return schema


def _fullname(name: str, namespace: str) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


class _Parser:
    def __init__(self) -> None:
        self.names: dict[str, _Node] = {}

    def parse(self, schema: Any, namespace: str) -> _Node:
        if isinstance(schema, str):
            return self._reference(schema, namespace)
        if isinstance(schema, list):
            branches = [self.parse(branch, namespace) for branch in schema]
            if any(branch.kind == "union" for branch in branches):
                raise InvalidSchema("a union may not contain a union")
            return _Node("union", branches=branches)
        if not isinstance(schema, dict):
            raise InvalidSchema(f"not a schema: {schema!r}")
        kind = schema.get("type")
        if isinstance(kind, dict | list):  # {"type": {...}}: fastavro accepts the nesting
            return self.parse(kind, namespace)
        if not isinstance(kind, str):
            raise InvalidSchema(f"schema without a type: {schema!r}")
        if kind in PRIMITIVES:
            return _Node(kind)
        if kind in ("record", "error", "enum", "fixed"):
            return self._named(schema, "record" if kind == "error" else kind, namespace)
        if kind == "array":
            if "items" not in schema:
                raise InvalidSchema("array without items")
            return _Node("array", child=self.parse(schema["items"], namespace))
        if kind == "map":
            if "values" not in schema:
                raise InvalidSchema("map without values")
            return _Node("map", child=self.parse(schema["values"], namespace))
        return self._reference(kind, namespace)

    def _reference(self, name: str, namespace: str) -> _Node:
        if name in PRIMITIVES:
            return _Node(name)
        for candidate in (_fullname(name, namespace), name):
            if candidate in self.names:
                return self.names[candidate]
        raise InvalidSchema(f"unknown type name {name!r}")

    def _named(self, schema: dict[str, Any], kind: str, enclosing: str) -> _Node:
        name = schema.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidSchema(f"{kind} without a name")
        if "." in name:
            namespace = name.rsplit(".", 1)[0]
        else:
            given = schema.get("namespace")
            namespace = given if isinstance(given, str) else enclosing
        fullname = _fullname(name, namespace)
        if fullname in self.names or fullname in PRIMITIVES:
            raise InvalidSchema(f"type name {fullname!r} is defined twice")
        aliases = schema.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InvalidSchema(f"{fullname}: aliases must be a list of names")
        node = _Node(
            kind,
            name=fullname,
            alias_fullnames=frozenset(_fullname(a, namespace) for a in aliases),
            alias_short=frozenset(a for a in aliases if "." not in a),
        )
        self.names[fullname] = node  # before the fields: a record may refer to itself
        if kind == "record":
            fields = schema.get("fields")
            if not isinstance(fields, list):
                raise InvalidSchema(f"record {fullname} without fields")
            for raw in fields:
                if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                    raise InvalidSchema(f"record {fullname}: a field without a name")
                if "type" not in raw:
                    raise InvalidSchema(f"record {fullname}: field {raw['name']} without a type")
                field_aliases = raw.get("aliases") or []
                node.fields.append(
                    _Field(
                        raw["name"],
                        self.parse(raw["type"], namespace),
                        tuple(a for a in field_aliases if isinstance(a, str)),
                        "default" in raw,
                    )
                )
        elif kind == "enum":
            symbols = schema.get("symbols")
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                raise InvalidSchema(f"enum {fullname} without a list of symbols")
            node.symbols = tuple(symbols)
            default = schema.get("default")
            node.enum_default = default if isinstance(default, str) else None
        else:
            size = schema.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidSchema(f"fixed {fullname} without a size")
            node.size = size
        return node


# --- resolution ------------------------------------------------------------------------------


def _describe(node: _Node) -> str:
    if node.kind in _NAMED:
        return f"{node.kind} {node.name}"
    if node.kind == "array":
        assert node.child is not None
        return f"array<{_describe_short(node.child)}>"
    if node.kind == "map":
        assert node.child is not None
        return f"map<{_describe_short(node.child)}>"
    if node.kind == "union":
        return "union [" + ", ".join(_describe_short(b) for b in node.branches) + "]"
    return node.kind


def _describe_short(node: _Node) -> str:
    return node.name if node.kind in _NAMED else _describe(node)


def _names_match(writer: _Node, reader: _Node) -> bool:
    return (
        writer.short == reader.short
        or writer.name in reader.alias_fullnames
        or writer.short in reader.alias_short
    )


def _matches(writer: _Node, reader: _Node) -> bool:
    """The specification's (shallow) "match": how a union branch is chosen."""
    if writer.kind == "union" or reader.kind == "union":
        return True
    if writer.kind in _NAMED and reader.kind in _NAMED:
        # fastavro chooses a named branch by name alone (then fails if the kinds differ)
        if writer.kind == reader.kind == "fixed" and writer.size != reader.size:
            return False
        return _names_match(writer, reader)
    if writer.kind != reader.kind:
        return reader.kind in _PROMOTIONS.get(writer.kind, frozenset())
    if writer.kind in ("array", "map"):
        assert writer.child is not None and reader.child is not None
        return _matches(writer.child, reader.child)
    return True


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Resolver:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.seen: set[tuple[str, str]] = set()

    def problem(self, path: str, message: str, steps: tuple[Step, ...]) -> None:
        self.problems.append(Problem(path or "(root)", message, steps))

    def resolve(self, writer: _Node, reader: _Node, path: str, steps: tuple[Step, ...]) -> None:
        if writer.kind == "union":
            for index, branch in enumerate(writer.branches):
                self.resolve_branch(branch, reader, path, (*steps, ("branch", index)), True)
            return
        if reader.kind == "union":
            self.resolve_branch(writer, reader, path, steps, False)
            return
        if writer.kind in _NAMED and reader.kind in _NAMED:
            self.resolve_named(writer, reader, path, steps)
            return
        if writer.kind != reader.kind:
            if reader.kind not in _PROMOTIONS.get(writer.kind, frozenset()):
                self.problem(
                    path, f"writer {_describe(writer)} cannot be read as {_describe(reader)}", steps
                )
            return
        if writer.kind == "array":
            assert writer.child is not None and reader.child is not None
            self.resolve(
                writer.child, reader.child, (path or "(root)") + "[]", (*steps, ("items",))
            )
        elif writer.kind == "map":
            assert writer.child is not None and reader.child is not None
            self.resolve(
                writer.child, reader.child, (path or "(root)") + "{}", (*steps, ("values",))
            )

    def resolve_branch(
        self, writer: _Node, reader: _Node, path: str, steps: tuple[Step, ...], in_union: bool
    ) -> None:
        """A non-union writer, or one branch of a writer union, against the reader."""
        candidates = reader.branches if reader.kind == "union" else [reader]
        for candidate in candidates:
            if _matches(writer, candidate):
                self.resolve(writer, candidate, path, steps)
                return
        if in_union:
            what = f"writer union branch {_describe_short(writer)}"
        else:
            what = f"writer {_describe(writer)}"
        if reader.kind == "union":
            self.problem(path, f"{what} matches no branch of reader {_describe(reader)}", steps)
        else:
            self.problem(path, f"{what} cannot be read as {_describe(reader)}", steps)

    def resolve_named(
        self, writer: _Node, reader: _Node, path: str, steps: tuple[Step, ...]
    ) -> None:
        if writer.kind != reader.kind:
            self.problem(
                path, f"writer {_describe(writer)} cannot be read as {_describe(reader)}", steps
            )
            return
        if not _names_match(writer, reader):
            self.problem(
                path,
                f"writer {writer.kind} {writer.name} does not match reader {reader.kind} "
                f"{reader.name} (other name, and not one of the reader's aliases)",
                steps,
            )
            return
        if writer.kind == "fixed":
            if writer.size != reader.size:
                self.problem(
                    path,
                    f"writer fixed {writer.name} has size {writer.size}, reader's {reader.size}",
                    steps,
                )
            return
        key = (writer.name, reader.name)
        if key in self.seen:  # checked already, or being checked higher up (recursion)
            return
        self.seen.add(key)
        if writer.kind == "enum":
            if reader.enum_default is not None:
                return
            known = set(reader.symbols)
            for symbol in writer.symbols:
                if symbol not in known:
                    self.problem(
                        path,
                        f"writer symbol {symbol} unknown to reader (reader enum {reader.short} "
                        "has no default)",
                        (*steps, ("symbol", symbol)),
                    )
            return
        record_path = path or writer.short
        by_name = {f.name: f for f in writer.fields}
        for reader_field in reader.fields:
            writer_field = by_name.get(reader_field.name)
            if writer_field is None:
                writer_field = next(
                    (by_name[a] for a in reader_field.aliases if a in by_name), None
                )
            field_path = _join(record_path, reader_field.name)
            if writer_field is None:
                if not reader_field.has_default:
                    self.problem(
                        field_path,
                        f"reader field ({_describe(reader_field.type)}) is missing from the "
                        "writer and has no default",
                        steps,
                    )
                continue
            self.resolve(
                writer_field.type,
                reader_field.type,
                field_path,
                (*steps, ("field", writer_field.name)),
            )
