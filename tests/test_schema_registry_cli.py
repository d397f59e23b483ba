"""`charge-capture run` and `produce` with a schema registry, as a user runs them: the start-up
refusals (exit 78, the problem in one line), a registry silent for too long (exit 69), and
produce then run end to end."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from tests.brokers import BrokerInfo
from tests.factories import charge, other_line
from tests.helpers import wait_until
from tests.registry_helpers import OURS, incompatible
from tests.schema_registry_server import SchemaRegistryServer
from tests.test_schema_registry_worker import assert_decided_as_offline
from tests.worker_harness import config_flags, worker_config
from tests.worker_process import WorkerProcess, charge_capture_bin, free_port
from worker.cli import main
from worker.config import WorkerConfig
from worker.errors import EXIT_CONFIG, EXIT_UNAVAILABLE
from worker.kafka.reading import read_to_end
from worker.processing.table import latest_decisions
from worker.serde.registry_source import codec_for

pytestmark = pytest.mark.broker


def run_until_exit(config: WorkerConfig, *flags: str) -> tuple[int, list[dict[str, Any]], str]:
    """`charge-capture run` to its own exit: (exit code, its JSON log lines, the rest)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")}
    done = subprocess.run(
        [charge_capture_bin(), "run", *config_flags(config), "--http-port", "0", *flags],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines, other = [], []
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
        elif line.strip():
            other.append(line)
    return done.returncode, lines, "\n".join(other)


def critical(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["level"] == "CRITICAL"]


def test_lookup_only_with_the_output_subjects_missing_exits_78(
    broker: BrokerInfo, topic_prefix: str, server: SchemaRegistryServer
) -> None:
    config = worker_config(broker, topic_prefix)
    code, lines, other = run_until_exit(
        config, "--schema-registry-url", server.url, "--no-auto-register-schemas"
    )
    assert code == EXIT_CONFIG, (lines, other)
    assert other == "", other  # no traceback
    [fatal] = critical(lines)
    assert fatal["msg"] == "schemas unusable with the schema registry; exiting"
    assert f"{config.corrected_topic}-value does not exist" in fatal["error"]
    assert "auto-register is off" in fatal["error"]
    assert server.count("POST", "/subjects/") >= 1 and server.registry.subjects == {}


def test_an_unreadable_latest_input_schema_exits_78_naming_the_problem(
    broker: BrokerInfo, topic_prefix: str, server: SchemaRegistryServer
) -> None:
    config = worker_config(broker, topic_prefix)
    subject = f"{config.input_topic}-value"
    server.registry.subject_levels[subject] = "NONE"  # the producers' registry let it in
    server.registry.register(subject, {"schema": json.dumps(OURS)})
    server.registry.register(subject, {"schema": json.dumps(incompatible())})
    code, lines, other = run_until_exit(config, "--schema-registry-url", server.url)
    assert code == EXIT_CONFIG, (lines, other)
    assert other == "", other
    problems = [line for line in lines if line["msg"] == "input schema cannot be read with ours"]
    assert len(problems) == 1, lines
    assert problems[0]["subject"] == subject and "units" in problems[0]["problem"]
    [fatal] = critical(lines)
    assert subject in fatal["error"] and "units" in fatal["error"]
    assert fatal["exit_code"] == EXIT_CONFIG


def test_a_registry_silent_past_the_limit_exits_69_with_one_line(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    config = worker_config(broker, topic_prefix)
    nobody = f"http://127.0.0.1:{free_port()}"  # connection refused
    code, lines, other = run_until_exit(
        config, "--schema-registry-url", nobody, "--schema-registry-outage-s", "1.5"
    )
    assert code == EXIT_UNAVAILABLE, (lines, other)
    assert other == "", other
    [fatal] = critical(lines)
    assert fatal["msg"] == "schema registry unreachable for too long; exiting"
    assert nobody in fatal["error"] and "--schema-registry-outage-s 1.5" in fatal["error"]
    waits = [line for line in lines if line["msg"].startswith("schema registry unreachable:")]
    assert len(waits) == 1  # one warning per outage, not one per retry


def test_produce_with_the_registry_then_run(
    broker: BrokerInfo, topic_prefix: str, server: SchemaRegistryServer, tmp_path: Path
) -> None:
    config = worker_config(broker, topic_prefix)
    traction = charge(event_id="E1", charge_id="T1")
    cmt = other_line("98940", "M1", event_id="E2")
    day = tmp_path / "day.jsonl"
    day.write_text("".join(msgspec.json.encode(e).decode() + "\n" for e in (traction, cmt)))
    registry = ["--schema-registry-url", server.url]
    produce = [
        "--bootstrap-servers",
        str(config.bootstrap_servers),
        "--input-topic",
        config.input_topic,
    ]
    assert main(["produce", str(day), *produce, *registry]) == 0
    client = SchemaRegistryClient({"url": server.url})
    event_id = client.get_latest_version(f"{config.input_topic}-value").schema_id
    produced = list(read_to_end(config, [config.input_topic]))
    assert [struct.unpack(">I", r.value[1:5])[0] for r in produced if r.value] == [event_id] * 2

    worker = WorkerProcess(config, "sr-1", tmp_path, *registry)
    worker.start()
    reading = WorkerConfig(
        bootstrap_servers=config.bootstrap_servers, schema_registry_url=server.url
    )
    codec = codec_for(reading, writes={})
    try:
        wait_until(
            lambda: "T1" in latest_decisions(config, [config.held_topic], codec)[0],
            90,
            message="the traction line beside CMT was not held",
        )
        assert worker.alive, worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    held_id = client.get_latest_version(f"{config.held_topic}-value").schema_id
    held = [r.value for r in read_to_end(config, [config.held_topic]) if r.value]
    assert held and {struct.unpack(">I", v[1:5])[0] for v in held} == {held_id}
    assert held_id != event_id
    latest, _ = latest_decisions(config, [config.corrected_topic, config.held_topic], codec)
    assert_decided_as_offline(latest, [traction, cmt])
    client.close()
    codec.close()
