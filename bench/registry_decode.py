"""What a Confluent Schema Registry costs per event: decoding (and framing) with the registry's
ids against the local schemas/registry.json.

    .venv/bin/python -m bench.registry_decode [--events 20000] [--repeats 7]

One process, no broker: the test registry of tests/ on loopback answers the one request per
schema id; every figure after that is the per-record path alone. Variants, each over the same
generated events:

- local:           ids of schemas/registry.json (writer = reader)
- registry, ours:  the registry's id of our own charge_event schema (read without resolution)
- registry, newer: a producer's evolved schema (ours + an optional field): projected
- registry, older: a schema without encounter_id (default null): projected
- registry, newer, no projection: the newer one resolved by fastavro record by record (what
  worker.serde.projection saves)

For each: `decode` (framing + Avro, what the registry can change) and `decode_event` (plus the
pydantic validation the worker pays anyway), best of --repeats with the variants taking turns,
in microseconds per event; then `prefetch` (the worker's per-batch look at each record's id)
and framing a decision.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro

from rules.model import ChargeDecision, ChargeEvent, DecisionSource
from rules.pack import load_packs
from tests.schema_registry_server import SchemaRegistryServer
from worker.config import WorkerConfig
from worker.offline.sample import generate_events
from worker.serde.codec import Codec
from worker.serde.framing import DECISION, EVENT
from worker.serde.registry_source import RegistrySource
from worker.serde.schema_registry import RegistrySettings, SchemaRegistry
from worker.state.store import new_state

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _avro(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _avro(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_avro(v) for v in value]
    return value


def _framed(schema_id: int, parsed: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


def _interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best seconds of each run; the runs take turns, so the machine's noise hits all alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def _schemas() -> dict[str, dict[str, Any]]:
    ours = json.loads((SCHEMAS / "charge_event.avsc").read_text())
    newer = copy.deepcopy(ours)
    newer["fields"].append({"name": "source_system", "type": ["null", "string"], "default": None})
    older = copy.deepcopy(ours)
    older["fields"] = [f for f in older["fields"] if f["name"] != "encounter_id"]
    return {"ours": ours, "newer": newer, "older": older}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    events = [
        ChargeEvent.model_validate(e) for e in generate_events(max(1, args.events // 2), seed=3)
    ]
    events = events[: args.events]
    records = [_avro(e.model_dump()) for e in events]
    local = Codec()
    variants: dict[str, tuple[Codec, list[bytes]]] = {
        "local": (local, [local.encode_event(e) for e in events])
    }
    with SchemaRegistryServer() as server:
        registry = SchemaRegistry(RegistrySettings(server.url))
        source = RegistrySource(registry, writes={"charges.corrected": DECISION})
        codec = Codec(source)
        codec.open()
        for name, schema in _schemas().items():
            body = {"schema": json.dumps(schema)}
            schema_id = server.registry.register(f"bench-{name}-value", body)
            parsed = fastavro.parse_schema(schema)
            fields = {f["name"] for f in schema["fields"]}
            values = [
                _framed(schema_id, parsed, {"source_system": "EHR", **r} if name == "newer" else
                        {k: v for k, v in r.items() if k in fields})
                for r in records
            ]  # fmt: skip
            codec.prefetch(values)  # the one request of this id
            variants[f"registry, {name}"] = (codec, values)
        # For reference: the newer writer resolved by fastavro, as before serde.projection.
        resolved = Codec(source)
        newer_values = variants["registry, newer"][1]
        resolved.prefetch(newer_values)
        newer_id = struct.unpack(">I", newer_values[0][1:5])[0]
        writer_schema, _, _ = resolved._events[newer_id]
        resolved._events[newer_id] = (writer_schema, source.reader(EVENT), None)
        variants["registry, newer, no projection"] = (resolved, newer_values)
        decision = local.decode_decision(local.encode_decision(_decision(events[0])))
        runs: dict[str, Callable[[], object]] = {}
        for label, (chosen, values) in variants.items():
            runs[f"decode {label}"] = lambda c=chosen, v=values: [c.decode(x, EVENT) for x in v]
            runs[f"event {label}"] = lambda c=chosen, v=values: [c.decode_event(x) for x in v]
        runs["prefetch"] = lambda: codec.prefetch(newer_values)
        runs["encode local"] = lambda: [local.encode_decision(decision) for _ in events]
        runs["encode registry"] = lambda: [
            codec.encode_decision(decision, "charges.corrected") for _ in events
        ]
        us = {k: v / len(events) * 1e6 for k, v in _interleaved(runs, args.repeats).items()}
        print(f"{len(events)} events, best of {args.repeats}, microseconds per event")
        print(f"{'variant':<32}{'decode':>8}{'vs local':>10}{'decode_event':>14}{'vs local':>10}")
        for label in variants:
            raw, full = us[f"decode {label}"], us[f"event {label}"]
            delta_raw, delta_full = raw - us["decode local"], full - us["event local"]
            print(f"{label:<32}{raw:>8.2f}{delta_raw:>+10.2f}{full:>14.2f}{delta_full:>+10.2f}")
        print(f"prefetch (every id known), per record: {us['prefetch']:.2f}")
        encode = us["encode local"], us["encode registry"]
        print(f"encode_decision: local {encode[0]:.2f}, registry {encode[1]:.2f}")
        print(f"registry requests for all of it: {len(server.requests)}")
        codec.close()


def _decision(event: ChargeEvent) -> ChargeDecision:
    state = new_state(WorkerConfig(), 0, 1)
    source = DecisionSource(topic="t", partition=0, offset=0, event_id=event.event_id)
    return state.decide(event, source, load_packs())[0].decision


if __name__ == "__main__":
    main()
