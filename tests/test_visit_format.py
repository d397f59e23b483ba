"""A visit's value (worker.state.visit_format): its documented Avro layout, read by fastavro;
the earlier formats it still restores; charges written under another charge schema."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from pathlib import Path
from typing import Any

import fastavro
import pytest

from rules.charge import DecisionSource, charge_from_dict
from rules.model import DecisionStatus
from rules.pack import load_packs
from rules.visit import Visit, VisitKey, emitted
from tests.factories import charge, other_line
from worker.offline.sample import generate_events
from worker.serde.framing import LocalRegistry, default_schemas_dir
from worker.state.lines import lines_of
from worker.state.store import PartitionState
from worker.state.visit_format import VISIT_FORMAT, VisitCodec, visit_state_schema
from worker.state.visit_format_old import FORMAT_1, _state_schema
from worker.varints import read_long

PACKS = load_packs()


def _same(a: Visit, b: Visit) -> bool:
    return (a.key, a.charges, a.published) == (b.key, b.charges, b.published)


def _visits(state: PartitionState) -> list[Visit]:
    return [state.visits[key] for key in list(state.visits)]


def _day(visits: int = 200, seed: int = 5) -> PartitionState:
    """A generated day decided into one partition's state (it has holds and corrections)."""
    state = PartitionState(0, dt.timedelta(days=30))
    for offset, event in enumerate(charge_from_dict(e) for e in generate_events(visits, seed)):
        source = DecisionSource(topic="in", partition=0, offset=offset, event_id=event.event_id)
        emitted(state.decide(event, source, PACKS))
    return state


def test_a_value_is_the_documented_avro_read_by_fastavro() -> None:
    """After its prefix a value is VisitState; each line's charge is a ChargeEvent body."""
    codec = VisitCodec()
    event_schema = fastavro.parse_schema(
        json.loads((default_schemas_dir() / "charge_event.avsc").read_text())
    )
    state_schema = fastavro.parse_schema(visit_state_schema())
    held = 0
    for visit in _visits(_day()):
        raw = codec.encode(visit)
        assert raw[0] == VISIT_FORMAT
        schema_id, start = read_long(raw, 1)
        assert schema_id == LocalRegistry().current["chargecapture.v1.ChargeEvent"].schema_id
        record = fastavro.schemaless_reader(io.BytesIO(raw[start:]), state_schema, state_schema)
        assert isinstance(record, dict)
        ids = sorted(visit.charges)
        assert [
            fastavro.schemaless_reader(io.BytesIO(line["charge"]), event_schema, event_schema)[
                "charge_id"
            ]
            for line in record["lines"]
        ] == ids
        for cid, line in zip(ids, record["lines"], strict=True):
            p, mine = line["published"], visit.published.get(cid)
            assert (p is None) == (mine is None)
            if p is not None and mine is not None:
                assert (p["version"], p["status"], p["fingerprint"]) == (
                    mine.version,
                    mine.status.value,
                    mine.fingerprint,
                )
                held += mine.status is DecisionStatus.HELD
        assert _same(codec.decode(visit.key, raw), visit)
        assert codec.read_lines(raw) == lines_of(visit)
        assert codec.held_index(raw) == [(x.charge_id, x.held_at) for x in lines_of(visit)]
    assert held > 0  # the HELD branch of the skim was exercised


def test_a_truncated_or_padded_value_is_refused() -> None:
    codec = VisitCodec()
    visit = _visits(_day(20))[0]
    raw = codec.encode(visit)
    for bad in (raw[: len(raw) // 2], raw[:-1], raw + b"\x00"):
        with pytest.raises(ValueError):
            codec.held_index(bad)
        with pytest.raises(ValueError):
            codec.read_lines(bad)


def _format_1(codec: VisitCodec, visit: Visit) -> bytes:
    """`visit` as format 1 values were written, by fastavro from format 1's schema."""
    event = json.loads((default_schemas_dir() / "charge_event.avsc").read_text())
    schema = fastavro.parse_schema(_state_schema(event))
    lines = []
    for line in lines_of(visit):
        p = line.published
        lines.append(
            {
                "charge_id": line.charge_id,
                "event_id": line.event_id,
                "occurred_at": line.occurred_at,
                "published": None
                if p is None
                else {
                    "version": p.version,
                    "status": p.status.value,
                    "ledger": p.ledger.name,
                    "fingerprint": p.fingerprint,
                },
            }
        )
    charges = []
    for cid in sorted(visit.charges):
        body = codec.encode_charge(visit.charges[cid])
        charges.append(fastavro.schemaless_reader(io.BytesIO(body), schema_of(event), None))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, {"lines": lines, "charges": charges})
    return bytes([FORMAT_1, 2]) + out.getvalue()  # schema id 1, as a zigzag varint


def schema_of(document: dict[str, Any]) -> Any:
    return fastavro.parse_schema(document)


def test_a_format_1_value_restores_and_is_written_anew_in_format_2() -> None:
    codec = VisitCodec()
    state = _day(60)
    for visit in _visits(state):
        old = _format_1(codec, visit)
        assert _same(codec.decode(visit.key, old), visit)
        assert codec.read_lines(old) == lines_of(visit)
        assert codec.held_index(old) == [(x.charge_id, x.held_at) for x in lines_of(visit)]
        assert codec.encode(codec.decode(visit.key, old))[0] == VISIT_FORMAT


def _evolved(tmp_path: Path, change: str) -> tuple[LocalRegistry, LocalRegistry]:
    """(a registry whose charge schema is an older one, ours with that one registered too)."""
    source = default_schemas_dir()
    event = json.loads((source / "charge_event.avsc").read_text())
    fields = event["fields"]
    if change == "dropped":  # an optional field the older schema did not have
        event["fields"] = [f for f in fields if f["name"] != "encounter_id"]
    else:  # the same fields in another order: its head is not where format 2 looks
        event["fields"] = [fields[3], *fields[:3], *fields[4:]]
    registries = []
    for name, mapping in (
        ("old", {"1": "charge_event.old.avsc"}),
        ("new", {"1": "charge_event.old.avsc", "2": "charge_event.avsc"}),
    ):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(source / "charge_event.avsc", folder / "charge_event.avsc")
        (folder / "charge_event.old.avsc").write_text(json.dumps(event))
        (folder / "registry.json").write_text(json.dumps(mapping))
        registries.append(LocalRegistry(folder))
    return registries[0], registries[1]


@pytest.mark.parametrize("change", ["dropped", "reordered"])
def test_charges_written_under_an_older_charge_schema_are_resolved(
    tmp_path: Path, change: str
) -> None:
    old, new = _evolved(tmp_path, change)
    writer, reader = VisitCodec(old), VisitCodec(new)
    lines = [
        charge(units=3, encounter_id=None),
        other_line("98941", "C2", event_id="E-C2", encounter_id=None),
    ]
    visit = Visit(
        VisitKey(lines[0].patient_id, lines[0].date_of_service), {c.charge_id: c for c in lines}, {}
    )
    raw = writer.encode(visit)
    assert read_long(raw, 1)[0] == 1  # written under the older schema's id
    assert _same(reader.decode(visit.key, raw), visit)
    assert reader.read_lines(raw) == lines_of(visit)
    assert reader.held_index(raw) == [("C1", None), ("C2", None)]
    assert read_long(reader.encode(reader.decode(visit.key, raw)), 1)[0] == 2  # ours, anew


def test_only_a_head_laid_out_as_the_skim_reads_it_is_skimmed() -> None:
    from worker.state.visit_format import _head_laid_out

    event = json.loads((default_schemas_dir() / "charge_event.avsc").read_text())
    assert _head_laid_out(event)
    micros = json.loads(json.dumps(event))
    micros["fields"][2]["type"]["logicalType"] = "timestamp-micros"
    many = json.loads(json.dumps(event))
    many["fields"][1]["type"]["symbols"] = [f"S{n}" for n in range(65)]
    assert not _head_laid_out(micros) and not _head_laid_out(many)
