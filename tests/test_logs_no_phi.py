"""Logs are JSON lines on stdout and never carry a patient id or a diagnosis code.

The end-to-end test runs the real `charge-capture run` process over a generated day plus records
that take every dead-letter path, and scans everything it printed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from rules.model import ChargeEvent
from rules.visit import VisitKey
from tests.brokers import BrokerInfo
from tests.factories import avro_fields, charge, other_line
from tests.helpers import stop_process, wait_until
from tests.worker_harness import config_flags, isolated_config
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.kafka.reading import read_to_end
from worker.observability.logs import JsonFormatter
from worker.observability.logs import describe_error as error_text
from worker.offline.sample import generate_events
from worker.serde.codec import Codec
from worker.serde.framing import EVENT

CHARGE_CAPTURE = Path(sys.executable).with_name("charge-capture")
TIMEOUT_S = 60.0
DLQ_PATHS = ("DECODE", "SCHEMA", "VALIDATION", "REPARTITION")


# --- JsonFormatter --------------------------------------------------------------------------


def _record(msg: str, *args: object, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("charge_capture.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_formatter_one_object_per_line_with_fields() -> None:
    formatter = JsonFormatter()
    record = _record(
        "dead-lettered %s\nsecond line",
        "x",
        fields={"topic": "charges.captured", "partition": 3, "offset": 42, "path": Path("/a")},
    )
    out = formatter.format(record)
    assert "\n" not in out
    entry = json.loads(out)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "charge_capture.test"
    assert entry["msg"] == "dead-lettered x\nsecond line"
    assert entry["ts"].endswith("+00:00")
    assert (entry["topic"], entry["partition"], entry["offset"]) == ("charges.captured", 3, 42)
    assert entry["path"] == "/a"  # non-JSON values are stringified, not fatal


def test_json_formatter_exception_stays_on_one_line() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("batch failed")
        record.exc_info = sys.exc_info()
    out = formatter.format(record)
    assert "\n" not in out
    entry = json.loads(out)
    assert entry["msg"] == "batch failed"
    assert "ValueError: boom" in entry["error"]


def test_json_formatter_without_fields_has_the_base_keys_only() -> None:
    entry = json.loads(JsonFormatter().format(_record("plain")))
    assert set(entry) == {"ts", "level", "logger", "msg"}


# --- a full run -----------------------------------------------------------------------------


def _run_args(config: WorkerConfig) -> list[str]:
    assert config.bootstrap_servers
    return [
        str(CHARGE_CAPTURE),
        "run",
        *config_flags(config),
        "--session-timeout-ms",
        str(config.session_timeout_ms),
        "--heartbeat-interval-ms",
        str(config.heartbeat_interval_ms),
        "--http-port",
        "0",
    ]


# Held by DIAGNOSIS_NOT_SUPPORTING, and sent keyed by someone else: goes via the repartition topic.
MISKEYED = other_line(
    "97140",
    "C-LOGS-MISKEYED",
    patient_id="P77000001",
    encounter_id="ENC-LOGS-1",
    diagnosis_codes=["S13.4XXA"],
)


def _produce(config: WorkerConfig, events: list[ChargeEvent]) -> dict[TopicPartition, int]:
    """The stream, then one record per dead-letter path; returns the input end offsets."""
    assert config.bootstrap_servers
    codec = Codec()
    producer = KafkaProducer(bootstrap_servers=config.bootstrap_servers, acks="all")
    futures = []
    try:
        for event in events:
            futures.append(
                producer.send(
                    config.input_topic,
                    key=event.patient_id.encode(),
                    value=codec.encode_event(event),
                )
            )
        someone = events[0].patient_id.encode()
        valid = codec.encode_event(charge(charge_id="C-LOGS-BAD", patient_id="P77000002"))
        no_patient = avro_fields(charge_id="C-LOGS-NOPAT", patient_id="P77000003")
        no_patient["patient_id"] = ""  # schema-valid, fails validation
        bad_records = [
            (someone, b"\x00\x00"),  # DECODE: shorter than the header
            (someone, valid[:1] + b"\x7f\xff\xff\xff" + valid[5:]),  # SCHEMA: unknown id
            (b"P77000003", codec.encode(EVENT, no_patient)),  # VALIDATION
            (b"P77000009", codec.encode_event(MISKEYED)),  # re-keyed via repartition
        ]
        for key, value in bad_records:
            futures.append(producer.send(config.input_topic, key=key, value=value))
        # REPARTITION: a record on the repartition topic not keyed by its patient.
        producer.send(config.repartition_topic, key=b"P77000010", value=valid)
        producer.flush(timeout=TIMEOUT_S)
        ends: dict[TopicPartition, int] = {}
        for future in futures:
            meta = future.get(timeout=TIMEOUT_S)
            tp = TopicPartition(meta.topic, meta.partition)
            ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
        return ends
    finally:
        producer.close(timeout=5)


def _all_committed(config: WorkerConfig, ends: dict[TopicPartition, int]) -> bool:
    """The worker's group has committed every produced input record (OffsetFetch, no join)."""
    assert config.bootstrap_servers
    reader = KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        group_id=config.group,
        enable_auto_commit=False,
    )
    try:
        return all((reader.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        reader.close(autocommit=False)


def _decided(config: WorkerConfig, charge_id: str) -> bool:
    assert config.bootstrap_servers
    codec = Codec()
    records = read_to_end(config.bootstrap_servers, [config.corrected_topic, config.held_topic])
    return any(codec.decode_decision(r.value).charge_id == charge_id for r in records)


def _dead_letters(config: WorkerConfig) -> set[str]:
    assert config.bootstrap_servers
    codec = Codec()
    return {
        codec.decode_dead_letter(r.value).error_kind.value
        for r in read_to_end(config.bootstrap_servers, [config.dlq_topic])
    }


@pytest.mark.broker
def test_a_full_run_logs_json_lines_without_phi(
    broker: BrokerInfo, topic_prefix: str, tmp_path: Path
) -> None:
    config = isolated_config(broker, topic_prefix)
    ensure_topics(config)
    events = [ChargeEvent.model_validate(e) for e in generate_events(200, 20260302)]
    ends = _produce(config, events)

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")}
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            _run_args(config), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
    try:

        def caught_up() -> bool:
            assert proc.poll() is None, f"worker exited early: {stderr_path.read_text()[-3000:]}"
            return _all_committed(config, ends)

        wait_until(caught_up, TIMEOUT_S, 0.25, "the worker did not commit the whole input")
        wait_until(
            lambda: (
                _decided(config, MISKEYED.charge_id) and _dead_letters(config) >= set(DLQ_PATHS)
            ),
            TIMEOUT_S,
            0.25,
            "the re-keyed event or the dead letters never came out",
        )
    finally:
        returncode = stop_process(proc)
    assert returncode == 0, stderr_path.read_text()[-3000:]

    stdout = stdout_path.read_text()
    stderr = stderr_path.read_text()
    lines = stdout.splitlines()
    assert lines, "the worker logged nothing"
    entries = []
    for line in lines:
        entry = json.loads(line)  # every stdout line is one JSON object
        assert isinstance(entry, dict), line
        assert {"ts", "level", "msg"} <= entry.keys(), line
        assert entry["level"] in {"INFO", "WARNING", "ERROR", "CRITICAL"}, line
        entries.append(entry)
    messages = [e["msg"] for e in entries]
    assert "worker started" in messages
    dead = [e for e in entries if e["msg"] == "dead-lettered"]
    assert {e["error_kind"] for e in dead} >= set(DLQ_PATHS)

    patient_ids = {e.patient_id for e in events} | {
        MISKEYED.patient_id,
        "P77000002",
        "P77000003",
        "P77000009",
        "P77000010",
    }
    diagnosis_codes = {c for e in events for c in e.diagnosis_codes} | {
        *MISKEYED.diagnosis_codes,
        "M54.16",
        "S13.4XXA",
    }
    assert len(patient_ids) > 150 and len(diagnosis_codes) > 5
    output = stdout + "\n" + stderr
    leaked = sorted(v for v in patient_ids | diagnosis_codes if v in output)
    assert not leaked, f"PHI in the worker's output: {leaked}"


def test_failure_reasons_in_logs_never_quote_record_data() -> None:
    patient = "P12345678"
    unknown_visit = KeyError(VisitKey(patient, charge().date_of_service))
    assert patient in str(unknown_visit)  # what a plain f"{error}" would have logged
    for error in (unknown_visit, ValueError(f"bad patient {patient}")):
        text = error_text(error)
        assert patient not in text and type(error).__name__ in text
    assert error_text(KafkaTimeoutError("commit timed out")).endswith("commit timed out")
    refused = ConnectionRefusedError("[Errno 111] Connection refused")
    assert "Connection refused" in error_text(refused)
