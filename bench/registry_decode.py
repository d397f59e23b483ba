"""What a Confluent Schema Registry costs per event: decoding (and framing) with the registry's
ids against the local schemas/registry.json.

    .venv/bin/python -m bench.registry_decode [--events 20000] [--repeats 7]

One process, no broker: the test registry of tests/ on loopback answers the one request per
schema id; every figure after that is the per-record path alone. Variants, each over the same
generated events:

- local:           ids of schemas/registry.json (writer = reader)
- registry, ours:  the registry's id of our own charge_event schema (read without resolution)
- registry, newer: a producer's evolved schema (ours + an optional field): Avro resolution
- registry, older: a schema without encounter_id (default null): Avro resolution

For each: `decode` (framing + Avro, what the registry can change) and `decode_event` (plus the
pydantic validation the worker pays anyway), best of --repeats, in microseconds per event; then
`prefetch` (the worker's per-batch look at each record's id) and framing a decision.
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


def _best_us(run: Callable[[], None], count: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


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
        n, repeats = len(events), args.repeats
        print(f"{n} events, best of {repeats}, microseconds per event (one process)")
        print(f"{'variant':<18}{'decode':>10}{'vs local':>10}{'decode_event':>14}{'vs local':>10}")
        base: tuple[float, float] | None = None
        for label, (chosen, values) in variants.items():
            raw = _best_us(lambda c=chosen, v=values: [c.decode(x, EVENT) for x in v], n, repeats)
            full = _best_us(lambda c=chosen, v=values: [c.decode_event(x) for x in v], n, repeats)
            base = base or (raw, full)
            delta_raw, delta_full = raw - base[0], full - base[1]
            print(f"{label:<18}{raw:>10.2f}{delta_raw:>+10.2f}{full:>14.2f}{delta_full:>+10.2f}")
        known = variants["registry, newer"][1]
        prefetch = _best_us(lambda: codec.prefetch(known), n, repeats)
        print(f"prefetch (every id known), per record: {prefetch:.2f}")
        decision = local.decode_decision(local.encode_decision(_decision(events[0])))
        framing = {
            "local": _best_us(
                lambda: [local.encode_decision(decision) for _ in events], n, repeats
            ),
            "registry": _best_us(
                lambda: [codec.encode_decision(decision, "charges.corrected") for _ in events],
                n,
                repeats,
            ),
        }
        print(f"encode_decision: local {framing['local']:.2f}, registry {framing['registry']:.2f}")
        print(f"registry requests for all of it: {len(server.requests)}")
        codec.close()


def _decision(event: ChargeEvent) -> ChargeDecision:
    state = new_state(WorkerConfig(), 0, 1)
    source = DecisionSource(topic="t", partition=0, offset=0, event_id=event.event_id)
    return state.decide(event, source, load_packs())[0].decision


if __name__ == "__main__":
    main()
