"""The command line as a user runs it: check, generate, topics, produce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from rules.model import ChargeEvent
from tests.brokers import BrokerInfo
from tests.factories import event_dict
from worker.cli import main
from worker.kafka.reading import read_to_end
from worker.serde.codec import Codec
from worker.serde.framing import EVENT


def _line(**overrides: object) -> str:
    return json.dumps(event_dict(**overrides))


def test_check_writes_final_decisions_and_reports_bad_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "day.jsonl"
    source.write_text(
        "\n".join(
            [
                _line(event_id="E1", charge_id="C1", units=3),
                "{not json",
                _line(event_id="E2", charge_id="C2", patient_id="P9", payer={"plan_type": "NOPE"}),
                _line(event_id="E3", charge_id="C3", cpt_code="97110"),
                _line(
                    event_id="E4",
                    charge_id="C3",
                    cpt_code="97110",
                    event_type="VOID",
                    occurred_at="2026-03-02T16:00:00Z",
                ),
            ]
        )
        + "\n"
    )
    out = tmp_path / "decisions.jsonl"
    assert main(["check", str(source), "--out", str(out)]) == 0
    decisions = {d["charge_id"]: d for d in map(json.loads, out.read_text().splitlines())}
    assert set(decisions) == {"C1", "C3"}
    assert decisions["C1"]["status"] == "CORRECTED" and decisions["C1"]["units"] == 1
    assert decisions["C1"]["corrections"][0]["rule_id"] == "TRACTION_UNITS"
    assert set(decisions["C1"]) == {
        "charge_id",
        "status",
        "cpt_code",
        "modifiers",
        "units",
        "corrections",
        "holds",
    }
    assert decisions["C3"]["status"] == "VOIDED"
    err = capsys.readouterr().err
    assert "rejected line 2: " in err and "rejected line 3: payer.plan_type" in err
    assert "rejected lines 2" in err and "TRACTION_UNITS" in err
    assert "P9" not in err  # the rejected line's patient id is not echoed


def test_check_with_another_rules_directory(tmp_path: Path) -> None:
    pack = (Path(__file__).parent.parent / "rules" / "packs" / "cpt97012.toml").read_text()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "pack.toml").write_text(
        pack.replace(
            'plan_types = ["MEDICARE", "MEDICARE_ADVANTAGE"]\n\n[[gp',
            'plan_types = ["MEDICARE", "MEDICARE_ADVANTAGE", "COMMERCIAL"]\n\n[[gp',
        )
    )
    source = tmp_path / "one.jsonl"
    source.write_text(_line() + "\n")
    default_out, custom_out = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    main(["check", str(source), "--out", str(default_out)])
    main(["check", str(source), "--out", str(custom_out), "--rules", str(rules)])
    assert json.loads(default_out.read_text())["modifiers"] == []
    assert json.loads(custom_out.read_text())["modifiers"] == ["GP"]


def test_generate_is_reproducible_and_valid(capsys: pytest.CaptureFixture[str]) -> None:
    main(["generate", "--visits", "20", "--seed", "3"])
    first = capsys.readouterr().out
    main(["generate", "--visits", "20", "--seed", "3"])
    assert capsys.readouterr().out == first
    events = [ChargeEvent.model_validate_json(line) for line in first.splitlines()]
    assert len({e.patient_id for e in events}) > 1


@pytest.mark.broker
def test_topics_then_produce(broker: BrokerInfo, topic_prefix: str, tmp_path: Path) -> None:
    names = [
        "--input-topic",
        f"{topic_prefix}.in",
        "--corrected-topic",
        f"{topic_prefix}.ok",
        "--held-topic",
        f"{topic_prefix}.held",
        "--dlq-topic",
        f"{topic_prefix}.dlq",
        "--app-id",
        f"{topic_prefix}-app",
        "--partitions",
        "3",
    ]
    common = ["--bootstrap-servers", broker.bootstrap_servers, *names]
    assert main(["topics", *common]) == 0
    assert main(["topics", *common]) == 0  # idempotent: verifies, creates nothing
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        described = {t["name"]: t for t in admin.describe_topics([f"{topic_prefix}.in"])}
        assert len(described[f"{topic_prefix}.in"]["partitions"]) == 3
        assert f"{topic_prefix}-app.state-changelog" in admin.list_topics()
    finally:
        admin.close()
    day = tmp_path / "day.jsonl"
    day.write_text(_line(event_id="E1") + "\n" + _line(event_id="E2", patient_id="P2") + "\n")
    produce = [
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--input-topic",
        f"{topic_prefix}.in",
    ]
    assert main(["produce", str(day), *produce]) == 0  # only the flags produce takes
    records = list(read_to_end(broker.bootstrap_servers, [f"{topic_prefix}.in"]))
    codec = Codec()
    decoded = {r.key: ChargeEvent.model_validate(codec.decode(r.value, EVENT)) for r in records}
    assert set(decoded) == {b"P00000001", b"P2"}  # keyed by patient_id
    assert decoded[b"P2"].event_id == "E2" and records[0].value[:1] == b"\x00"  # framed
