"""Avro binary readers and writers generated from our own schemas, for the hot path.

fastavro decodes any schema into dicts; the worker's hot path reads and writes a handful of
record types of its own schemas/ (the charge event, the decision, the changelog's visit) and
wants the lean msgspec Structs, not dicts. So for each of those, Python source specialised to
the schema is generated once at start-up and compiled: one function that reads the Avro binary
encoding straight into the Struct (or writes a Struct), with the common one-byte varints
inlined. Records written under any other schema (an older version, a registry-evolved one) go
through fastavro's schema resolution instead (worker.serde.codec).

Supported: records, enums, strings, bytes, booleans, int/long (with the date and
timestamp-millis logical types), arrays, and unions of null with one other type: everything
our schemas use. Anything else raises UnsupportedSchema at generation time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from worker.varints import SMALL as _SMALL
from worker.varints import VARINTS as _VARINTS
from worker.varints import read_long, varint

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


class UnsupportedSchema(ValueError):
    """A schema shape the generator does not handle (use fastavro for it)."""


class _Source:
    """Generated source: lines with indentation, fresh variable names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names = itertools.count()
        self.env: dict[str, Any] = {"Any": Any}
        self.consts: dict[str, str] = {}  # a value of the schema's own, by name: its type

    def var(self, stem: str) -> str:
        return f"{stem}{next(self.names)}"

    def const(self, value: Any, stem: str = "k") -> str:
        name = self.var(stem)
        self.env[name] = value
        kinds: dict[type, str] = {tuple: "tuple[Any, ...]", dict: "dict[Any, bytes]"}
        self.consts[name] = kinds.get(type(value), "Any")
        return name

    def key(self) -> str:
        """What names this code among the built functions (worker.serde.avro_built)."""
        signature = [f"{name}: {kind}" for name, kind in self.consts.items()]
        return hashlib.sha256("\n".join([*signature, *self.lines]).encode()).hexdigest()[:16]

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)


Types = Mapping[str, type]  # Avro full name -> msgspec Struct or Enum class


def _fullname(schema: dict[str, Any], namespace: str) -> str:
    name: str = schema["name"]
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


class _Named:
    """Named types seen so far (a schema may reference one by name after defining it)."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}

    def resolve(self, schema: Any, namespace: str) -> tuple[Any, str]:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            full = schema if "." in schema else f"{namespace}.{schema}"
            found = self.types.get(full) or self.types.get(schema)
            if found is None:
                raise UnsupportedSchema(f"unknown named type {schema}")
            return found, full.rpartition(".")[0]
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
            full = _fullname(schema, namespace)
            self.types[full] = schema
            return schema, full.rpartition(".")[0]
        return schema, namespace


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


# -- readers -----------------------------------------------------------------------------------


class _ReaderGen:
    def __init__(self, types: Types) -> None:
        self.src = _Source()
        self.types = types
        self.named = _Named()
        self.src.env.update(read_long=read_long, EPOCH=EPOCH, EPOCH_ORDINAL=EPOCH_ORDINAL)
        self.src.env.update(timedelta=dt.timedelta, fromordinal=dt.date.fromordinal)

    def long(self, d: int, target: str) -> None:
        e = self.src.emit
        e(d, "c = b[i]")
        e(d, "if c < 128:")
        e(d + 1, f"{target} = (c >> 1) ^ -(c & 1)")
        e(d + 1, "i += 1")
        e(d, "else:")
        e(d + 1, f"{target}, i = read_long(b, i)")

    def value(self, schema: Any, d: int, target: str, namespace: str) -> None:
        schema, namespace = self.named.resolve(schema, namespace)
        e = self.src.emit
        if isinstance(schema, list):
            self.union(schema, d, target, namespace)
            return
        kind = schema if isinstance(schema, str) else schema.get("type")
        if False:
            pass
        elif kind == "string" or kind == "bytes":
            n = self.src.var("n")
            self.long(d, n)
            # A truncated record reads past the end: the caller checks where reading ended.
            e(d, f"if {n} < 0: raise ValueError('negative length')")
            e(d, f"j = i + {n}")
            e(d, f"{target} = b[i:j]" + (".decode()" if kind == "string" else ""))
            e(d, "i = j")
        elif kind in ("int", "long"):
            logical = schema.get("logicalType") if isinstance(schema, dict) else None
            raw = self.src.var("v")
            self.long(d, raw)
            if logical == "date":
                e(d, f"{target} = fromordinal(EPOCH_ORDINAL + {raw})")
            elif logical == "timestamp-millis":
                e(d, f"{target} = EPOCH + timedelta(milliseconds={raw})")
            else:
                e(d, f"{target} = {raw}")
        elif kind == "boolean":
            e(d, "c = b[i]")
            e(d, "if c > 1: raise ValueError('bad boolean')")
            e(d, f"{target} = c == 1")
            e(d, "i += 1")
        elif kind == "null":
            e(d, f"{target} = None")
        elif kind == "enum":
            self.enum(schema, d, target, namespace)
        elif kind == "array":
            self.array(schema, d, target, namespace)
        elif kind == "record":
            self.record(schema, d, target, namespace)
        elif isinstance(schema, dict) and isinstance(kind, (dict, list, str)):
            self.value(kind, d, target, namespace)  # {"type": {...}} wrapping
        else:
            raise UnsupportedSchema(f"type {kind!r}")

    def union(self, branches: list[Any], d: int, target: str, namespace: str) -> None:
        if len(branches) != 2 or "null" not in branches:
            raise UnsupportedSchema("only unions of null and one type")
        other = branches[1] if branches[0] == "null" else branches[0]
        some = 1 if branches[0] == "null" else 0
        e, branch = self.src.emit, self.src.var("u")
        e(d, f"{target}: Any")  # (typed for the built module: one branch sets None)
        self.long(d, branch)
        e(d, f"if {branch} == {some}:")
        self.value(other, d + 1, target, namespace)
        e(d, f"elif {branch} == {1 - some}:")
        e(d + 1, f"{target} = None")
        e(d, "else:")
        e(d + 1, "raise ValueError('bad union branch')")

    def enum(self, schema: dict[str, Any], d: int, target: str, namespace: str) -> None:
        cls = self.types.get(_fullname(schema, namespace))
        symbols = schema["symbols"]
        values = tuple(_member(cls, s) if cls is not None else s for s in symbols)
        table, index = self.src.const(values, "symbols"), self.src.var("x")
        self.long(d, index)
        e = self.src.emit
        e(d, f"if {index} < 0: raise ValueError('bad enum index')")
        e(d, f"{target} = {table}[{index}]")

    def array(self, schema: dict[str, Any], d: int, target: str, namespace: str) -> None:
        e, items = self.src.emit, self.src.var("a")
        count, item = self.src.var("n"), self.src.var("t")
        e(d, f"{items}: list[Any] = []")
        e(d, "while True:")
        self.long(d + 1, count)
        e(d + 1, f"if {count} == 0: break")
        e(d + 1, f"if {count} < 0:")
        e(d + 2, f"{count} = -{count}")
        e(d + 2, "_, i = read_long(b, i)")  # the block's byte size: not needed to read it
        e(d + 1, f"for _ in range({count}):")
        self.value(schema["items"], d + 2, item, namespace)
        e(d + 2, f"{items}.append({item})")
        e(d, f"{target} = tuple({items})")

    def record(self, schema: dict[str, Any], d: int, target: str, namespace: str) -> None:
        full = _fullname(schema, namespace)
        cls = self.types.get(full)
        if cls is None:
            raise UnsupportedSchema(f"no Python type for record {full}")
        fields = []
        for field in schema["fields"]:
            local = self.src.var(field["name"][:8])
            self.value(field["type"], d, local, namespace)
            fields.append(f"{field['name']}={local}")
        ctor = self.src.const(cls, "T")
        self.src.emit(d, f"{target} = {ctor}({', '.join(fields)})")


def compile_reader(schema: dict[str, Any], types: Types) -> Callable[[bytes, int], tuple[Any, int]]:
    """`read(data, start) -> (value, end)` for records written with exactly `schema`.

    Raises IndexError, ValueError, UnicodeDecodeError or OverflowError for bytes that do not
    decode (truncated, a bad length, an enum index out of range, a date out of range).
    """
    gen = _ReaderGen(types)
    gen.src.emit(0, "def read(b: bytes, i: int) -> tuple[Any, int]:")
    gen.value(schema, 1, "out", "")
    gen.src.emit(1, "return out, i")
    read: Callable[[bytes, int], tuple[Any, int]] = _compiled(gen.src, "read")
    return read


# -- writers -----------------------------------------------------------------------------------


def _member(cls: type, symbol: str) -> Any:
    """The member of Enum `cls` an Avro symbol stands for: by name, else by value."""
    members: Any = cls
    if symbol in members.__members__:
        return members[symbol]
    return members(symbol)


class _WriterGen:
    def __init__(self, types: Types) -> None:
        self.types = types
        self.src = _Source()
        self.named = _Named()
        self.src.env.update(varint=varint, EPOCH_ORDINAL=EPOCH_ORDINAL, EPOCH=EPOCH, V=_VARINTS)
        # union branch 0 and 1, and booleans, as their one-byte encodings
        self.src.env.update(B0=b"\x00", B1=b"\x01", B2=b"\x02")

    def long(self, d: int, expression: str) -> None:
        """Append the varint of `expression` (small values from the table, inline)."""
        value = self.src.var("n")
        e = self.src.emit
        e(d, f"{value} = {expression}")
        e(d, f"w += V[{value} + {_SMALL}] if -{_SMALL} <= {value} < {_SMALL} else varint({value})")

    def value(self, schema: Any, d: int, source: str, namespace: str) -> None:
        schema, namespace = self.named.resolve(schema, namespace)
        e = self.src.emit
        if isinstance(schema, list):
            self.union(schema, d, source, namespace)
            return
        kind = schema if isinstance(schema, str) else schema.get("type")
        if False:
            pass
        elif kind == "string":
            raw = self.src.var("s")
            e(d, f"{raw} = {source}.encode()")
            self.long(d, f"len({raw})")
            e(d, f"w += {raw}")
        elif kind == "bytes":
            self.long(d, f"len({source})")
            e(d, f"w += {source}")
        elif kind in ("int", "long"):
            logical = schema.get("logicalType") if isinstance(schema, dict) else None
            if logical == "date":
                self.long(d, f"{source}.toordinal() - EPOCH_ORDINAL")
            elif logical == "timestamp-millis":
                # Exact integer milliseconds: timedelta arithmetic, no float rounding.
                e(d, f"w += varint(({source} - EPOCH) // _MS)")
            else:
                self.long(d, source)
        elif kind == "boolean":
            e(d, f"w += B1 if {source} else B0")
        elif kind == "enum":
            table = self.src.const(self.enum_index(schema, namespace), "symbols")
            e(d, f"w += {table}[{source}]")
        elif kind == "array":
            item = self.src.var("t")
            e(d, f"if {source}:")
            self.long(d + 1, f"len({source})")
            e(d + 1, f"for {item} in {source}:")
            self.value(schema["items"], d + 2, item, namespace)
            e(d, "w += B0")
        elif kind == "record":
            for field in schema["fields"]:
                self.value(field["type"], d, f"{source}.{field['name']}", namespace)
        elif isinstance(schema, dict) and isinstance(kind, (dict, list, str)):
            self.value(kind, d, source, namespace)
        else:
            raise UnsupportedSchema(f"type {kind!r}")

    def enum_index(self, schema: dict[str, Any], namespace: str) -> dict[Any, bytes]:
        """Symbol, member and member value -> encoded index (a StrEnum member hashes by its
        name, its value by itself: both must find the index)."""
        cls = self.types.get(_fullname(schema, namespace))
        index: dict[Any, bytes] = {}
        for n, symbol in enumerate(schema["symbols"]):
            encoded = _VARINTS[n + _SMALL]
            index[symbol] = encoded
            if cls is not None:
                member = _member(cls, symbol)
                index[member] = index[member.value] = encoded
        return index

    def union(self, branches: list[Any], d: int, source: str, namespace: str) -> None:
        if len(branches) != 2 or "null" not in branches:
            raise UnsupportedSchema("only unions of null and one type")
        other = branches[1] if branches[0] == "null" else branches[0]
        some = 1 if branches[0] == "null" else 0
        e, held = self.src.emit, self.src.var("o")
        e(d, f"{held} = {source}")
        e(d, f"if {held} is None:")
        e(d + 1, f"w += {'B2' if some == 0 else 'B0'}")
        e(d, "else:")
        e(d + 1, f"w += {'B0' if some == 0 else 'B2'}")
        self.value(other, d + 1, held, namespace)


def compile_writer(
    schema: dict[str, Any], types: Types | None = None
) -> Callable[[Any, bytearray], bytearray]:
    """`write(value, out) -> out`: appends the Avro binary encoding of `value` (a Struct, or
    any object with the record's fields as attributes) to the bytearray `out`. `types` names
    the Python Enum of an Avro enum whose member names differ from its symbols."""
    gen = _WriterGen(types or {})
    gen.src.env["_MS"] = dt.timedelta(milliseconds=1)
    gen.src.emit(0, "def write(value: Any, w: bytearray) -> bytearray:")
    gen.value(schema, 1, "value", "")
    gen.src.emit(1, "return w")
    write: Callable[[Any, bytearray], bytearray] = _compiled(gen.src, "write")
    return write


# (key, source) of every function generated while it is a list: what worker.state.avro_build
# writes into worker.serde.avro_built.
RECORDING: list[tuple[str, _Source]] | None = None


def _compiled(src: _Source, name: str) -> Any:
    """The function `src` defines: its built (compiled) copy when there is one, bound to the
    schema's own values; else compiled from the source here."""
    key = src.key()
    if RECORDING is not None:
        RECORDING.append((key, src))
    build = _built().get(key)
    if build is not None:
        return build(**{const: src.env[const] for const in src.consts})
    namespace: dict[str, Any] = dict(src.env)
    exec(compile("\n".join(src.lines), f"<avro_fast {name}>", "exec"), namespace)
    return namespace[name]


def _built() -> dict[str, Callable[..., Any]]:
    try:
        from worker.serde.avro_built import FUNCTIONS
    except ImportError:  # (while worker.state.avro_build writes it anew)
        return {}
    return FUNCTIONS


def enum_types(*classes: type[Enum]) -> dict[str, type]:
    """Avro enum full names (namespace chargecapture.v1) for Python Enum classes."""
    return {f"chargecapture.v1.{cls.__name__}": cls for cls in classes}
