"""`charge-capture replay` against a real broker: determinism, agreement with the live worker,
a changed pack's diff, no side effects on the live flow, partial visits, and the CLI."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from rules.model import ChargeDecision, ChargeEvent, EventType, PlanType
from rules.pack import DEFAULT_PACKS_DIR
from rules.visit import VisitKey
from tests.brokers import BrokerInfo
from tests.helpers import wait_until
from tests.worker_harness import config_flags
from worker import cli
from worker.cli.cluster import produce_events
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.kafka.partitioner import home_partition
from worker.kafka.reading import read_to_end
from worker.processing.table import latest_decisions
from worker.replay.plan import (
    FileOutput,
    Position,
    ReplayOptions,
    TopicsOutput,
    parse_output,
    parse_position,
    shadow_topics,
)
from worker.replay.report import PARTIAL_VISIT_FLAG, ReplayReport
from worker.replay.run import run_replay
from worker.runtime.worker import Worker
from worker.serde.codec import Codec

pytestmark = pytest.mark.broker

VISITS, SEED, PARTITIONS = 250, 23, 3
MISKEYED = 8
TIMEOUT_S = 120.0


@dataclass
class Live:
    """A topic the live worker has fully decided, and what was produced to it."""

    config: WorkerConfig
    events: list[ChargeEvent]  # every decodable event produced, in produce order
    records: int  # records on the input topic (events + one undecodable)

    @property
    def bootstrap(self) -> str:
        assert self.config.bootstrap_servers
        return self.config.bootstrap_servers


def _all_decided(worker: Worker, charge_ids: set[str]) -> bool:
    """Input committed to its highwater and every charge on the live outputs.

    caught_up() checks only the input topic; the re-keyed events travel through the
    repartition topic afterwards (and there the committed offset stays one below the
    highwater: the transaction marker), so wait for their charges to be decided too.
    """
    if not worker.caught_up():
        return False
    config = worker.config
    assert config.bootstrap_servers
    latest, _ = latest_decisions(
        config.bootstrap_servers, [config.corrected_topic, config.held_topic]
    )
    return charge_ids <= set(latest)


@pytest.fixture(scope="module")
def live(broker: BrokerInfo) -> Iterator[Live]:
    from worker.offline.sample import generate_events

    prefix = f"r{uuid.uuid4().hex[:10]}"
    config = WorkerConfig(
        bootstrap_servers=broker.bootstrap_servers,
        app_id=f"{prefix}-app",
        group_id=f"{prefix}-group",
        instance_id=prefix,
        input_topic=f"{prefix}.charges.captured",
        corrected_topic=f"{prefix}.charges.corrected",
        held_topic=f"{prefix}.charges.held",
        dlq_topic=f"{prefix}.charges.dlq",
        partitions=PARTITIONS,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        http_port=0,
    )
    ensure_topics(config)
    events = [ChargeEvent.model_validate(e) for e in generate_events(VISITS, SEED)]
    produce_events(config, events)
    # A few extra lines keyed by something other than the patient (the live worker re-keys
    # them through the repartition topic) and one record that does not decode.
    upserts = [e for e in events if e.event_type is EventType.UPSERT]
    miskeyed = [
        e.model_copy(update={"event_id": f"{prefix}-mk-{i}", "charge_id": f"{prefix}-mk-{i}"})
        for i, e in enumerate(upserts[:: len(upserts) // MISKEYED][:MISKEYED])
    ]
    codec = Codec()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    try:
        for event in miskeyed:
            producer.send(
                config.input_topic, key=b"not-the-patient", value=codec.encode_event(event)
            )
        producer.send(config.input_topic, key=b"junk", value=b"\x00\x00\x00\x00\x63garbage")
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)

    charge_ids = {e.charge_id for e in [*events, *miskeyed]}
    worker = Worker(config)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="live-worker", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: _all_decided(worker, charge_ids), TIMEOUT_S, 0.5, "live worker did not catch up"
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    yield Live(config, [*events, *miskeyed], len(events) + len(miskeyed) + 1)


def _replay(live: Live, out: Path, **options: Any) -> ReplayReport:
    return run_replay(ReplayOptions(config=live.config, output=FileOutput(out), **options))


def _decisions(path: Path) -> list[ChargeDecision]:
    return [ChargeDecision.model_validate_json(line) for line in path.read_text().splitlines()]


def _latest(decisions: list[ChargeDecision]) -> dict[str, ChargeDecision]:
    latest: dict[str, ChargeDecision] = {}
    for d in decisions:
        current = latest.get(d.charge_id)
        rank = (d.decision_version, d.status != "RETRACTED")
        if current is None or rank > (current.decision_version, current.status != "RETRACTED"):
            latest[d.charge_id] = d
    return latest


def test_two_replays_give_byte_identical_files(live: Live, tmp_path: Path) -> None:
    first = _replay(live, tmp_path / "a.jsonl")
    second = _replay(live, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()

    assert first.records == second.records == live.records
    assert first.dlq == 1
    assert first.partial_visit_decisions == 0
    decisions = _decisions(tmp_path / "a.jsonl")
    assert len(decisions) == first.decisions > 0
    # Sources are the original input records, mis-keyed ones included (not the repartition).
    assert {d.source.topic for d in decisions} == {live.config.input_topic}
    assert {d.charge_id for d in decisions} == {e.charge_id for e in live.events}
    assert not any(PARTIAL_VISIT_FLAG in d.flags for d in decisions)


def test_replay_with_the_live_pack_reports_no_difference(live: Live, tmp_path: Path) -> None:
    report = _replay(live, tmp_path / "d.jsonl", diff=True, diff_out=tmp_path / "diff.jsonl")
    assert report.diff is not None
    assert report.diff.compared == len({e.charge_id for e in live.events})
    assert report.diff.changes == []
    assert (tmp_path / "diff.jsonl").read_text() == ""


def _expected_gp_changes(events: list[ChargeEvent], payer: str) -> set[str]:
    """Charges whose final line is a live 97012 for `payer` (commercial) without GP/GO/GN."""
    winner: dict[str, ChargeEvent] = {}
    for event in events:
        current = winner.get(event.charge_id)
        if current is None or (event.occurred_at, event.event_id) > (
            current.occurred_at,
            current.event_id,
        ):
            winner[event.charge_id] = event
    medicare = {PlanType.MEDICARE, PlanType.MEDICARE_ADVANTAGE}
    return {
        e.charge_id
        for e in winner.values()
        if e.event_type is EventType.UPSERT
        and e.cpt_code == "97012"
        and e.payer.payer_id == payer
        and e.payer.plan_type not in medicare
        and not {"GP", "GO", "GN"} & set(e.modifiers)
    }


def test_a_changed_pack_setting_lists_exactly_the_affected_charges(
    live: Live, tmp_path: Path
) -> None:
    packs = tmp_path / "packs"
    packs.mkdir()
    text = (DEFAULT_PACKS_DIR / "cpt97012.toml").read_text()
    addition = '\n[[gp_required.payers]]\npayer_id = "AETNA"\neffective_from = "2015-10-01"\n'
    anchor = "[medicare_chiropractor]"
    assert anchor in text
    (packs / "cpt97012.toml").write_text(text.replace(anchor, addition + "\n" + anchor))
    expected = _expected_gp_changes(live.events, "AETNA")
    assert expected, "the sample should hold AETNA traction lines without a therapy modifier"

    diff_out = tmp_path / "diff.jsonl"
    report = _replay(live, tmp_path / "d.jsonl", rules_dir=packs, diff=True, diff_out=diff_out)
    assert report.diff is not None
    assert {c.charge_id for c in report.diff.changes} == expected
    assert report.diff.rules_added["GP_REQUIRED"] == len(expected)
    assert not report.diff.rules_removed.get("GP_REQUIRED")
    lines = [json.loads(line) for line in diff_out.read_text().splitlines()]
    assert [line["charge_id"] for line in lines] == sorted(expected)
    for line in lines:
        assert "modifiers" in line["changed"]
        assert (
            line["after"]["modifiers"][: len(line["before"]["modifiers"])]
            == (line["before"]["modifiers"])
        )
        assert "GP" in line["after"]["modifiers"]
        assert "GP_REQUIRED" in line["after"]["corrections"]


def _live_snapshot(live: Live) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
    admin = KafkaAdminClient(bootstrap_servers=live.bootstrap)
    group = live.config.group
    try:
        committed = {
            (tp.topic, tp.partition): meta.offset
            # kafka-python 3: list_group_offsets (list_consumer_group_offsets in 2.x)
            for tp, meta in admin.list_group_offsets({group: None})[group].items()
        }
    finally:
        admin.close()
    config = live.config
    topics = [
        config.input_topic,
        config.repartition_topic,
        config.corrected_topic,
        config.held_topic,
        config.dlq_topic,
        config.changelog_topic,
    ]
    counts = {
        t: sum(1 for _ in read_to_end(live.bootstrap, [t], isolation_level="read_uncommitted"))
        for t in topics
    }
    return committed, counts


def test_replay_leaves_the_live_group_and_topics_alone(live: Live, tmp_path: Path) -> None:
    before = _live_snapshot(live)
    assert before[0], "the live group has committed offsets"
    prefix = f"replay.{uuid.uuid4().hex[:6]}."
    report = run_replay(
        ReplayOptions(
            config=live.config,
            output=TopicsOutput(prefix),
            diff=True,
            diff_out=tmp_path / "diff.jsonl",
        )
    )
    assert _live_snapshot(live) == before

    corrected, held, dlq = shadow_topics(live.config, prefix)
    assert corrected == prefix + live.config.corrected_topic
    shadow = sum(1 for _ in read_to_end(live.bootstrap, [corrected, held]))
    assert shadow == report.decisions > 0
    assert sum(1 for _ in read_to_end(live.bootstrap, [dlq])) == report.dlq == 1
    assert report.diff is not None and report.diff.changes == []


def test_a_prefix_onto_a_live_topic_is_refused() -> None:
    with pytest.raises(ValueError, match="refusing"):
        shadow_topics(WorkerConfig(), "")
    clashing = WorkerConfig(input_topic="replay.charges.corrected")
    with pytest.raises(ValueError, match="refusing"):
        shadow_topics(clashing, "replay.")
    with pytest.raises(ValueError, match="refusing"):
        run_replay(
            ReplayOptions(config=WorkerConfig(bootstrap_servers="x:1"), output=TopicsOutput(""))
        )


def test_range_syntax() -> None:
    assert parse_position("offset:2:17", ("beginning", "offset")) == Position(
        "offset", partition=2, offset=17
    )
    stamp = parse_position("timestamp:2026-03-02T10:00:00", ("end", "timestamp"))
    assert stamp.timestamp is not None and stamp.timestamp.utcoffset() is not None
    with pytest.raises(ValueError):
        parse_position("end", ("beginning", "offset", "timestamp"))
    with pytest.raises(ValueError):
        parse_position("offset:x:1", ("offset",))
    assert parse_output("file:x.jsonl") == FileOutput(Path("x.jsonl"))
    assert parse_output("topics:r.") == TopicsOutput("r.")
    with pytest.raises(ValueError):
        parse_output("topics:")


def _input_by_partition(live: Live) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for record in read_to_end(live.bootstrap, [live.config.input_topic]):
        out.setdefault(record.partition, []).append(record)
    return out


def test_partial_visits_flagged_without_warmup_and_not_with_it(live: Live, tmp_path: Path) -> None:
    codec = Codec()
    partition = 1
    records = _input_by_partition(live)[partition]
    middle = records[len(records) // 2].offset
    earlier: set[VisitKey] = set()
    for record in records:
        if record.offset < middle:
            try:
                earlier.add(VisitKey.of(codec.decode_event(record.value)))
            except Exception:
                continue
    start = parse_position(f"offset:{partition}:{middle}", ("beginning", "offset"))

    cold = _replay(live, tmp_path / "cold.jsonl", start=start)
    assert cold.records == live.records - middle
    decisions = _decisions(tmp_path / "cold.jsonl")
    flagged = [d for d in decisions if PARTIAL_VISIT_FLAG in d.flags]
    assert flagged
    assert cold.partial_visit_decisions == len(flagged)
    # Exactly the decisions of visits with events before the start are flagged.
    for d in decisions:
        key = VisitKey(d.patient_id, d.date_of_service)
        assert (PARTIAL_VISIT_FLAG in d.flags) == (key in earlier)

    warm = _replay(live, tmp_path / "warm.jsonl", start=start, warmup=Position("beginning"))
    assert warm.partial_visit_decisions == 0
    assert warm.warmup_records == middle
    warm_latest = _latest(_decisions(tmp_path / "warm.jsonl"))
    _replay(live, tmp_path / "full.jsonl")
    full_latest = _latest(_decisions(tmp_path / "full.jsonl"))
    assert warm_latest
    for charge_id, decision in warm_latest.items():
        assert decision.model_dump() == full_latest[charge_id].model_dump()


def test_cli_replay_smoke(live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = live.config
    common = config_flags(config, worker=False)
    out = tmp_path / "cli.jsonl"
    code = cli.main(
        [
            "replay",
            *common,
            "--from",
            "timestamp:2000-01-01T00:00:00Z",
            "--output",
            f"file:{out}",
            "--diff",
            "--diff-out",
            str(tmp_path / "diff.jsonl"),
            "--progress",
            "off",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "records read" in err and "0 would change" in err
    _replay(live, tmp_path / "api.jsonl")
    assert out.read_bytes() == (tmp_path / "api.jsonl").read_bytes()

    # Past every record: nothing to replay (Tansu answers such a lookup with timestamp -1).
    future = ["--from", "timestamp:2999-01-01T00:00:00Z", "--output", f"file:{out}"]
    assert cli.main(["replay", *common, *future]) == 0
    assert "records read        0" in capsys.readouterr().err
    assert out.read_bytes() == b""

    refused = cli.main(["replay", *common, "--output", f"topics:{''}"])
    assert refused == 2
    assert "replay:" in capsys.readouterr().err


def test_home_partition_matches_the_producer() -> None:
    # Properly keyed records land where the default partitioner put them: own state.
    from kafka.partitioner.default import DefaultPartitioner

    partitioner = DefaultPartitioner()

    class _Cluster:
        def topics(self) -> set[str]:
            return {"t"}

        def partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(6))

        def available_partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(6))

    for key in (b"P1", b"P30777988", b"patient-xyz"):
        expected = partitioner.partition("t", key, key, None, None, _Cluster())
        assert home_partition(key, 6) == expected


def test_replay_and_live_emit_byte_identical_decision_records(live: Live) -> None:
    """Live and replay decide through one processing path: a (charge_id, decision_version)
    on a topic is the same bytes whichever of them wrote it, and the latest record of every
    charge is the same. (Each emits only the latest decision of a charge per batch, and their
    batches end at other points, so one may skip a version the other wrote.) Visits that a
    re-keyed event joined are left out: live decides that event later, from the repartition
    topic (its source names that topic), where replay decides it in place."""
    prefix = f"replay.{uuid.uuid4().hex[:6]}."
    run_replay(ReplayOptions(config=live.config, output=TopicsOutput(prefix)))
    codec = Codec()
    rekeyed_visits = {
        (e.patient_id, e.date_of_service) for e in live.events if "-mk-" in e.event_id
    }
    assert rekeyed_visits, "the fixture re-keys some events"
    Identity = tuple[int, str, int, str]  # topic, charge_id, version, status

    def records(topics: list[str]) -> dict[Identity, bytes]:
        out: dict[Identity, bytes] = {}
        for index, topic in enumerate(topics):
            for record in read_to_end(live.bootstrap, [topic]):
                assert record.value is not None
                d = codec.decode_decision(record.value)
                if (d.patient_id, d.date_of_service) in rekeyed_visits:
                    continue
                identity = (index, d.charge_id, d.decision_version, d.status.value)
                assert out.setdefault(identity, record.value) == record.value, identity
        return out

    config = live.config
    corrected, held, _ = shadow_topics(config, prefix)
    live_records = records([config.corrected_topic, config.held_topic])
    replayed = records([corrected, held])
    common = set(live_records) & set(replayed)
    assert len(common) > 100
    assert {k: live_records[k] for k in common} == {k: replayed[k] for k in common}

    def latest(found: dict[Identity, bytes]) -> dict[str, bytes]:
        ranked = sorted(found, key=lambda k: (k[2], k[3] != "RETRACTED"))
        return {k[1]: found[k] for k in ranked}

    assert latest(live_records) == latest(replayed)
