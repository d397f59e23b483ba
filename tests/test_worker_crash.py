"""Crash test: a worker process SIGKILLed mid-stream several times still decides every charge once.

A generated day (`worker.sample`) is fed to a `charge-capture run` subprocess in chunks; after
each chunk has started to produce decisions the process is SIGKILLed (no abort, no leave-group,
an open transaction left behind) and started again with the same instance id, which fences its
predecessor. At the end the group has committed the whole input, and:

- every input charge has a decision, and the latest one per charge is what the offline fold
  (`rules.visit.decide_events`) computes — VOIDED where the verdict is None;
- no (charge_id, decision_version, topic) carries two different records. Tansu 0.6 shows
  aborted transactions to read_committed readers, so identical repeats are allowed (and
  counted) there; on a broker that filters aborted transactions there are none.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rules.model import ChargeDecision, ChargeEvent, DecisionStatus
from rules.pack import load_packs
from rules.visit import decide_events
from tests.brokers import BrokerInfo
from tests.factories import findings, lean
from tests.helpers import wait_until
from tests.worker_process import GroupProgress, RecordCounter, WorkerProcess, worker_config
from worker.cli.cluster import produce_events
from worker.kafka.admin import ensure_topics
from worker.kafka.reading import read_to_end
from worker.offline.sample import generate_events
from worker.processing.table import latest_decisions
from worker.serde.codec import Codec

pytestmark = [pytest.mark.broker, pytest.mark.slow]

VISITS = 600
SEED = 20260302
KILLS = 4
# Small batches: many transactions, so a kill lands inside one rather than between two (a
# batch is decided for a commit interval before its transaction runs).
MAX_POLL_RECORDS = 50
COMMIT_INTERVAL_MS = 20
# Decisions (read_uncommitted, so in-flight ones count) an incarnation must have produced
# before it is killed: it has joined, restored and is in the middle of the stream.
PROGRESS_BEFORE_KILL = 30
STEP_TIMEOUT_S = 45.0


@pytest.fixture
def crash_worker(broker: BrokerInfo, topic_prefix: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    config = worker_config(broker.bootstrap_servers, topic_prefix)
    ensure_topics(config)
    worker = WorkerProcess(
        config,
        "crash-1",
        tmp_path,
        "--max-poll-records",
        str(MAX_POLL_RECORDS),
        "--commit-interval-ms",
        str(COMMIT_INTERVAL_MS),
    )
    yield worker
    worker.stop()


def _chunks(events: list[ChargeEvent], sizes: list[float]) -> list[list[ChargeEvent]]:
    """Split in order: sizes are fractions of the stream (the last chunk takes the rest)."""
    out, start = [], 0
    for fraction in sizes:
        end = start + int(len(events) * fraction)
        out.append(events[start:end])
        start = end
    out.append(events[start:])
    return out


def _await_commit(worker: WorkerProcess, progress: GroupProgress, start: int | None) -> None:
    """Until this incarnation has committed (the group's lag fell below `start`)."""

    def committed() -> bool:
        assert worker.alive, f"worker exited on its own:\n{worker.log_tail()}"
        lag = progress.lag()
        return start is None or (lag is not None and (lag < start or lag == 0))

    wait_until(committed, STEP_TIMEOUT_S, interval_s=0.02, message="no commit")


def _await_decisions(
    worker: WorkerProcess,
    counter: RecordCounter,
    count: int,
    what: str,
    progress: GroupProgress,
) -> None:
    """Until `count` more decisions are out (in flight counts), or the input is drained."""
    floor = counter.poll()

    def moving() -> bool:
        assert worker.alive, f"worker exited on its own:\n{worker.log_tail()}"
        return counter.poll() >= floor + count or progress.lag() == 0

    wait_until(moving, STEP_TIMEOUT_S, interval_s=0.02, message=f"no progress before {what}")


def test_sigkill_mid_stream_decides_every_charge_once(
    broker: BrokerInfo,
    crash_worker: WorkerProcess,
    record_property: Callable[[str, object], None],
) -> None:
    worker = crash_worker
    config = worker.config
    assert config.bootstrap_servers
    bootstrap = config.bootstrap_servers
    outputs = [config.corrected_topic, config.held_topic]
    events = [ChargeEvent.model_validate(e) for e in generate_events(VISITS, SEED)]
    # 40 % before the first start, then one chunk after each kill.
    chunks = _chunks(events, [0.40] + [0.15] * (KILLS - 1))
    assert len(chunks) == KILLS + 1

    produce_events(config, chunks[0])
    counter = RecordCounter(bootstrap, outputs)
    progress = GroupProgress(bootstrap, config.group, [config.input_topic])
    lag_at_kill: list[int] = []
    try:
        wait_until(lambda: progress.lag() is not None, 30.0, message="input highwater unknown")
        lag_at_start = progress.lag()
        worker.start()
        for kill in range(KILLS):
            # Even kills land in the incarnation's first transaction; odd ones after it has
            # committed at least once, inside a later one (committed and leaked aborted
            # changelog records then both precede the next restore).
            if kill % 2 == 1:
                _await_commit(worker, progress, lag_at_start)
            _await_decisions(worker, counter, PROGRESS_BEFORE_KILL, f"kill {kill}", progress)
            worker.kill()
            lag = progress.lag()
            lag_at_kill.append(-1 if lag is None else lag)
            produce_events(config, chunks[kill + 1])
            lag_at_start = progress.lag()
            worker.start()

        progress.wait_drained(90.0, worker)
        restarts = worker.incarnation
        assert worker.stop() == 0, worker.log_tail()
    finally:
        counter.close()
        progress.close()

    # -- every record of every (charge_id, decision_version, topic) is identical ------------
    codec = Codec()
    copies: dict[tuple[str, int, str], list[ChargeDecision]] = defaultdict(list)
    for record in read_to_end(bootstrap, outputs):
        decision = codec.decode_decision(record.value)
        copies[(decision.charge_id, decision.decision_version, record.topic)].append(decision)
    conflicting = {k: v for k, v in copies.items() if any(d != v[0] for d in v[1:])}
    assert not conflicting, f"same (charge, version, topic), different records: {conflicting}"
    repeats = sum(len(v) - 1 for v in copies.values())
    dead = sum(1 for _ in read_to_end(bootstrap, [config.dlq_topic]))

    mid_stream = sum(1 for lag in lag_at_kill if lag > 0)
    summary = (
        f"crash test: {len(events)} events, {KILLS} SIGKILLs ({mid_stream} with input "
        f"uncommitted, lag at kill {lag_at_kill}), {restarts} starts, "
        f"{sum(len(v) for v in copies.values())} decision records, exact repeats {repeats} "
        f"(broker {broker.kind}, filters aborted: {broker.filters_aborted_transactions})"
    )
    print(summary)
    record_property("kills", KILLS)
    record_property("kills_with_input_uncommitted", mid_stream)
    record_property("exact_repeats", repeats)
    record_property("decision_records", sum(len(v) for v in copies.values()))
    if broker.filters_aborted_transactions:
        assert repeats == 0, summary
    assert dead == 0, "the generated stream has no undecidable events"
    # The kills must have hit a worker with work outstanding, or this tests nothing.
    assert mid_stream >= 1, summary

    # -- the latest decision per charge is the offline verdict --------------------------------
    latest, _ = latest_decisions(bootstrap, outputs, codec)
    expected = decide_events([lean(e) for e in events], load_packs())
    assert set(latest) == {e.charge_id for e in events}
    assert set(latest) == set(expected)
    wrong: dict[str, tuple[str, str]] = {}
    for charge_id, (_, verdict) in expected.items():
        decision = latest[charge_id]
        want = DecisionStatus.VOIDED if verdict is None else verdict.status
        if decision.status != want:
            wrong[charge_id] = (decision.status.value, want.value)
        elif verdict is not None and (
            lean(decision.charge) != verdict.billed
            or findings(decision.corrections) != findings(verdict.corrections)
            or findings(decision.holds) != findings(verdict.holds)
        ):
            wrong[charge_id] = ("content", "differs from the offline verdict")
    assert not wrong, f"{len(wrong)} charges decided differently from offline: {wrong}"
