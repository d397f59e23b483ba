"""`check` on a committed generated day gives byte-identical decisions to the golden files.

The files were written by `charge-capture generate --visits 2000 --seed 11` and `check` before
the hot path was redesigned: any change to the rules' outcome, the fold, or the output format
shows up here as a diff. Regenerate them only for a deliberate change of decisions, and say why
in the commit.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from rules.model import ChargeDecision
from rules.pack import load_packs
from tests.brokers import BrokerInfo
from tests.helpers import metric_total, wait_until
from tests.worker_harness import running_worker, worker_config
from worker.cli.cluster import produce_events
from worker.offline import jsonlines
from worker.offline.check import run_check
from worker.processing.table import latest_decisions
from worker.runtime.worker import Worker

GOLDEN = Path(__file__).parent / "data" / "golden"
NCCI_PACKS = Path(__file__).parent / "data" / "packs_ncci"


@pytest.mark.parametrize(
    ("packs_dir", "expected"),
    [(None, "decisions.jsonl.gz"), (NCCI_PACKS, "decisions-ncci.jsonl.gz")],
    ids=["built-in packs", "ncci pack"],
)
def test_check_output_matches_golden(packs_dir: Path | None, expected: str) -> None:
    source = io.StringIO(gzip.decompress((GOLDEN / "day.jsonl.gz").read_bytes()).decode())
    out = io.StringIO()
    report = run_check(source, out, load_packs(packs_dir))
    golden = gzip.decompress((GOLDEN / expected).read_bytes()).decode()
    assert report.events == 5685 and not report.rejected
    produced = out.getvalue().splitlines()
    wanted = golden.splitlines()
    assert len(produced) == len(wanted)
    for number, (line, want) in enumerate(zip(produced, wanted, strict=True), start=1):
        assert line == want, f"decision line {number} differs"


@pytest.mark.broker
def test_the_latest_decision_per_charge_on_the_topics_equals_checks_output(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    """The live path (Kafka in, batches, transactions, changelog) ends where `check` does:
    the table of latest decisions over the output topics, rendered as check renders a line,
    is the golden file, line for line."""
    day = gzip.decompress((GOLDEN / "day.jsonl.gz").read_bytes()).decode()
    rejected: list[str] = []
    events = list(jsonlines.read_events(io.StringIO(day), rejected))
    assert len(events) == 5685 and not rejected
    config = worker_config(broker, topic_prefix)
    with running_worker(config) as worker:
        produce_events(config, events)
        wait_until(
            lambda: worker.caught_up() and _consumed(worker) >= len(events),
            180,
            message="the golden day was not decided",
        )
    latest, _ = latest_decisions(config, [config.corrected_topic, config.held_topic])
    golden = gzip.decompress((GOLDEN / "decisions.jsonl.gz").read_bytes()).decode()
    wanted = [json.loads(line) for line in golden.splitlines()]
    assert sorted(latest) == [line["charge_id"] for line in wanted]
    for line in wanted:
        assert _as_check_line(latest[line["charge_id"]]) == line, line["charge_id"]


def _as_check_line(decision: ChargeDecision) -> dict[str, Any]:
    billed = decision.charge
    return {
        "charge_id": decision.charge_id,
        "status": decision.status.value,
        "cpt_code": billed.cpt_code,
        "modifiers": list(billed.modifiers),
        "units": billed.units,
        "corrections": [c.model_dump(mode="json") for c in decision.corrections],
        "holds": [h.model_dump(mode="json") for h in decision.holds],
    }


def _consumed(worker: Worker) -> float:
    return metric_total(worker.metrics.registry, "charge_capture_events_consumed_total")
