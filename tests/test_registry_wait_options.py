"""Waiting for a silent schema registry (worker.processing.schema_wait), the registry options
of the command line and codec_for; no Kafka broker."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.registry_helpers import ID_BASE, registry_codec
from tests.schema_registry_server import SchemaRegistryServer
from worker.cli import build_parser
from worker.cli.options import UsageError, from_args
from worker.config import WorkerConfig
from worker.errors import (
    EXIT_UNAVAILABLE,
    SchemaRegistryOutage,
    SchemaRegistrySetupError,
    SchemaUnavailable,
)
from worker.observability.health import Health
from worker.processing.schema_wait import READINESS_REASON, SchemaWait
from worker.serde.framing import DECISION
from worker.serde.registry_source import codec_for


def test_codec_for_reads_the_config_and_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert codec_for(WorkerConfig(), writes={}).source.remote is False  # no URL: local ids
    with SchemaRegistryServer(auth=("billing", "s3cret")) as server:
        config = WorkerConfig(schema_registry_url=server.url, schema_registry_user="billing")
        monkeypatch.setenv("CHARGE_CAPTURE_SCHEMA_REGISTRY_PASSWORD", "s3cret")
        codec = codec_for(config, writes={"t": DECISION})
        codec.open()
        assert codec.source.writer_id(DECISION, "t") >= 100001
        codec.close()
    missing_ca = WorkerConfig(
        schema_registry_url="https://registry:8081", schema_registry_ca_file=str(tmp_path / "x")
    )
    with pytest.raises(SchemaRegistrySetupError) as unusable:
        codec_for(missing_ca, writes={})
    assert str(tmp_path / "x") in str(unusable.value)


# --- waiting for a silent registry ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_waits_are_bounded_and_readiness_says_why() -> None:
    clock, answered = Clock(), threading.Event()
    health = Health(clock=clock)
    wait = SchemaWait(30.0, health, answered.set, clock=clock)
    wait.stop.set()  # the backoff returns at once
    unreachable = SchemaUnavailable("schema registry http://r:8081 unavailable: HTTP 503")
    clock.now += 50.0
    wait.wait(unreachable)
    assert health.readiness() == (False, READINESS_REASON)
    assert health.is_alive(deadline_s=1.0)  # waiting on purpose is being alive
    clock.now += 29.0
    wait.wait(unreachable)  # still within the limit
    wait.answered()
    assert answered.is_set() and wait.since is None
    wait.wait(unreachable)  # a new outage counts from its own start
    clock.now += 30.0
    with pytest.raises(SchemaRegistryOutage) as outage:
        wait.wait(unreachable)
    assert outage.value.exit_code == EXIT_UNAVAILABLE
    assert "30 s" in str(outage.value) and "http://r:8081" in str(outage.value)


def test_open_waits_for_the_registry_then_resolves(server: SchemaRegistryServer) -> None:
    codec = registry_codec(server, {"charges.corrected": DECISION})
    server.go_down("503")
    wait = SchemaWait(60.0)
    opened = threading.Event()

    def open_it() -> None:
        if wait.open(codec):
            opened.set()

    thread = threading.Thread(target=open_it, daemon=True)
    thread.start()
    wait_until(lambda: wait.waits >= 2, 10, message="no retry while the registry was down")
    assert not opened.is_set()
    server.come_back()
    thread.join(timeout=20)
    assert opened.is_set() and wait.since is None
    assert codec.source.writer_id(DECISION, "charges.corrected") >= ID_BASE


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["run", "demo", "produce", "replay"])
def test_registry_flags_on_every_avro_verb(
    verb: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    for name in ("URL", "USER", "CA_FILE", "OUTAGE_S"):
        monkeypatch.delenv(f"CHARGE_CAPTURE_SCHEMA_REGISTRY_{name}", raising=False)
    monkeypatch.delenv("CHARGE_CAPTURE_AUTO_REGISTER_SCHEMAS", raising=False)
    extra = ["day.jsonl"] if verb == "produce" else []
    flags = [
        "--schema-registry-url",
        "https://sr:8081",
        "--schema-registry-user",
        "billing",
        "--schema-registry-ca-file",
        str(ca_file),
        "--schema-registry-outage-s",
        "45",
        "--no-auto-register-schemas",
    ]
    config = from_args(build_parser().parse_args([verb, *extra, *flags]))
    assert (config.schema_registry_url, config.schema_registry_user) == (
        "https://sr:8081",
        "billing",
    )
    assert config.schema_registry_ca_file == str(ca_file)
    assert config.schema_registry_outage_s == 45.0 and config.auto_register_schemas is False
    default = from_args(build_parser().parse_args([verb, *extra]))
    assert default.schema_registry_url is None and default.auto_register_schemas is True
    with pytest.raises(SystemExit):  # the password is never a flag
        build_parser().parse_args([verb, *extra, "--schema-registry-password", "x"])


def test_registry_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGE_CAPTURE_SCHEMA_REGISTRY_URL", "http://sr:8081")
    monkeypatch.setenv("CHARGE_CAPTURE_AUTO_REGISTER_SCHEMAS", "false")
    config = from_args(build_parser().parse_args(["run"]))
    assert config.schema_registry_url == "http://sr:8081" and not config.auto_register_schemas
    flagged = from_args(build_parser().parse_args(["run", "--auto-register-schemas"]))
    assert flagged.auto_register_schemas is True  # the flag wins over the variable
    monkeypatch.setenv("CHARGE_CAPTURE_AUTO_REGISTER_SCHEMAS", "maybe")
    with pytest.raises(UsageError, match="CHARGE_CAPTURE_AUTO_REGISTER_SCHEMAS='maybe'"):
        from_args(build_parser().parse_args(["run"]))  # a usage error: exit 2, one line
