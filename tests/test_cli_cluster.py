"""The verbs that talk to a cluster, as a user runs them: an address that does not answer, a
listener that wants other security, a bad input line, and reading the decisions back.

Console script in a subprocess; the broker is the session's real one (tests/conftest.py), a
free port nothing listens on, or a TLS listener that is not Kafka.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import BrokerInfo
from tests.cli_process import clean_env, cli, one_line_error
from tests.factories import event_dict
from tests.helpers import stop_process, wait_until
from tests.worker_harness import config_flags, running_worker, worker_config
from tests.worker_process import WorkerProcess, charge_capture_bin, free_port
from worker.config import WorkerConfig
from worker.kafka import clients
from worker.kafka.reading import read_to_end
from worker.processing.table import latest_decisions
from worker.serde.codec import Codec

# --- nothing answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verb",
    [["topics"], ["produce", "DAY"], ["replay"], ["decisions"]],
    ids=["topics", "produce", "replay", "decisions"],
)
def test_an_address_nothing_listens_on_is_named_within_seconds(
    tmp_path: Path, verb: list[str]
) -> None:
    day = tmp_path / "day.jsonl"
    day.write_text(json.dumps(event_dict()) + "\n")
    address = f"127.0.0.1:{free_port()}"
    args = [str(day) if a == "DAY" else a for a in verb]
    ran = cli(*args, "--bootstrap-servers", address)
    one_line_error(ran, 69, f"charge-capture: no Kafka broker answers at {address}", "refused")
    assert ran.seconds < 10, ran.seconds


def test_a_host_that_does_not_resolve_is_named() -> None:
    ran = cli("topics", "--bootstrap-servers", "no-such-host.invalid:9092")
    one_line_error(ran, 69, "no-such-host.invalid:9092: host 'no-such-host.invalid' not found")


# --- a listener with other security -----------------------------------------------------------


@pytest.mark.broker
def test_tls_against_a_plaintext_broker_is_named_within_seconds(broker: BrokerInfo) -> None:
    ran = cli(
        "topics",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--security-protocol",
        "SASL_SSL",
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--sasl-username",
        "u",
        env=clean_env(CHARGE_CAPTURE_SASL_PASSWORD="p"),
    )
    one_line_error(
        ran,
        78,
        f"Kafka does not accept --security-protocol SASL_SSL as configured: "
        f"{broker.bootstrap_servers}: ",
        "is it a plaintext listener?",
    )
    assert ran.seconds < 15, ran.seconds


@pytest.mark.broker
def test_a_sasl_mechanism_the_broker_does_not_take_is_named(broker: BrokerInfo) -> None:
    ran = cli(
        "topics",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "PLAIN",
        "--sasl-username",
        "u",
        env=clean_env(CHARGE_CAPTURE_SASL_PASSWORD="p"),
    )
    one_line_error(ran, 78, "SASL mechanism PLAIN")  # not "Unable to bootstrap"
    assert ran.seconds < 15, ran.seconds


def _certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls listener")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "listener.pem", directory / "listener.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A TLS endpoint on loopback (not Kafka: it only shakes hands), and its certificate."""
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}", cert
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_plaintext_against_a_tls_listener_is_named(tls_listener: tuple[str, Path]) -> None:
    address, _ = tls_listener
    ran = cli("topics", "--bootstrap-servers", address)
    line = one_line_error(ran, 78, f"--security-protocol PLAINTEXT as configured: {address}: ")
    assert "TLS" in line


def test_an_untrusted_certificate_is_named(tls_listener: tuple[str, Path]) -> None:
    address, _ = tls_listener
    ran = cli("topics", "--bootstrap-servers", address, "--security-protocol", "SSL")
    one_line_error(ran, 78, f"{address}: its TLS certificate is not accepted", "--ssl-cafile")


# --- produce ----------------------------------------------------------------------------------


def _lines(*events: dict[str, object]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


@pytest.mark.broker
def test_produce_reports_bad_lines_as_check_does(
    broker: BrokerInfo, topic_prefix: str, tmp_path: Path
) -> None:
    config = worker_config(broker, topic_prefix)
    day = tmp_path / "day.jsonl"
    day.write_text(
        _lines(event_dict(event_id="E1")) + "{not json\n" + _lines(event_dict(units="x"))
    )
    flags = ["--bootstrap-servers", broker.bootstrap_servers, "--input-topic", config.input_topic]
    ran = cli("produce", str(day), *flags)
    assert ran.code == 0 and "Traceback" not in ran.stderr, ran.stderr
    rejected = [line for line in ran.stderr.splitlines() if line.startswith("rejected")]
    assert rejected == [
        "rejected line 2: record: JSON is malformed: object keys must be strings (byte 1)",
        "rejected line 3: units: Expected `int`, got `str`",
    ]
    checked = cli("check", str(day), "--out", str(tmp_path / "out.jsonl"))
    assert [line for line in checked.stderr.splitlines() if line.startswith("rejected")] == (
        rejected
    )
    assert json.loads(ran.stdout) == {
        "produced": 1,
        "rejected_lines": 2,
        "topic": config.input_topic,
    }
    assert len(list(read_to_end(config, [config.input_topic]))) == 1
    check = cli("check", str(day))
    assert [line for line in check.stderr.splitlines() if line.startswith("rejected")] == (rejected)

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    ran = cli("produce", str(bad), *flags)
    assert ran.code == 65, ran.stderr
    assert ran.stderr.splitlines()[-1] == (
        f"charge-capture: {bad}: nothing produced: every line was rejected"
    )


@pytest.mark.broker
def test_produce_to_a_missing_topic_says_to_create_it(broker: BrokerInfo, tmp_path: Path) -> None:
    day = tmp_path / "day.jsonl"
    day.write_text(_lines(event_dict()))
    ran = cli(
        "produce",
        str(day),
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--input-topic",
        "no.such.topic",
    )
    one_line_error(ran, 78, "topic no.such.topic does not exist", "charge-capture topics")
    assert ran.seconds < 20


@pytest.mark.broker
def test_produce_honours_compression_type(
    broker: BrokerInfo, topic_prefix: str, tmp_path: Path
) -> None:
    config = worker_config(broker, topic_prefix)
    day = tmp_path / "day.jsonl"
    day.write_text(_lines(*(event_dict(event_id=f"E{n}", charge_id=f"C{n}") for n in range(5))))
    flags = ["--bootstrap-servers", broker.bootstrap_servers, "--input-topic", config.input_topic]
    ran = cli("produce", str(day), *flags, "--compression-type", "zstd")
    assert ran.code == 0, ran.stderr
    codec = Codec()
    events = [codec.decode_event(r.value) for r in read_to_end(config, [config.input_topic])]
    assert sorted(e.charge_id for e in events) == [f"C{n}" for n in range(5)]
    # the producer each setting builds
    for setting, expected in (("zstd", "zstd"), ("none", None), (None, "lz4")):
        config.compression_type = setting
        producer = clients.bulk_producer(config)
        try:
            assert producer.config["compression_type"] == expected, setting
        finally:
            producer.close(timeout=5)


@pytest.mark.broker
def test_topics_with_other_partition_counts_is_one_line_and_78(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    config = worker_config(broker, topic_prefix, partitions=3)
    ran = cli("topics", *config_flags(config, worker=False), "--partitions", "4")
    one_line_error(ran, 78, "topics exist with other partition counts")


# --- run --------------------------------------------------------------------------------------


@pytest.mark.broker
def test_run_with_zstd_compression_decides(
    broker: BrokerInfo, topic_prefix: str, tmp_path: Path
) -> None:
    config = worker_config(broker, topic_prefix)
    worker = WorkerProcess(config, "zstd", tmp_path, "--compression-type", "zstd")
    day = tmp_path / "day.jsonl"
    day.write_text(_lines(*(event_dict(event_id=f"E{n}", charge_id=f"C{n}") for n in range(5))))
    worker.start()
    try:
        ran = cli("produce", str(day), "--bootstrap-servers", broker.bootstrap_servers,
                  "--input-topic", config.input_topic)  # fmt: skip
        assert ran.code == 0, ran.stderr

        def decided() -> bool:
            assert worker.alive, worker.log_tail()
            latest, _ = latest_decisions(config, [config.corrected_topic, config.held_topic])
            return len(latest) == 5

        wait_until(decided, 60, 0.5, "the zstd worker decided nothing")
    finally:
        assert worker.stop() == 0, worker.log_tail()


EMBEDDED_LINE = re.compile(
    r"^charge-capture: embedded Kafka broker at (\S+) \(in memory: gone when this process "
    r"stops\); produce into it with: charge-capture produce FILE\.jsonl (--bootstrap-servers \S+)$",
    re.M,
)


@pytest.mark.slow
def test_run_with_the_embedded_broker_says_how_to_produce_into_it(tmp_path: Path) -> None:
    """The newcomer's loop: run, produce with the command it printed, read the decisions."""
    stderr_path = tmp_path / "run.err"
    with stderr_path.open("wb") as err:
        run = subprocess.Popen(
            [
                charge_capture_bin(),
                "run",
                "--http-port",
                "0",
                "--session-timeout-ms",
                "6000",
                "--heartbeat-interval-ms",
                "1000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
        )
    try:
        wait_until(lambda: EMBEDDED_LINE.search(stderr_path.read_text()), 60, 0.1, "no line")
        match = EMBEDDED_LINE.search(stderr_path.read_text())
        assert match is not None
        day = tmp_path / "day.jsonl"
        day.write_text(cli("generate", "--visits", "20", "--seed", "3").stdout)
        charges = {json.loads(line)["charge_id"] for line in day.read_text().splitlines()}
        produced = cli("produce", str(day), *match.group(2).split())
        assert produced.code == 0, produced.stderr

        seen: set[str] = set()

        def all_decided() -> bool:
            assert run.poll() is None, stderr_path.read_text()
            ran = cli("decisions", "--bootstrap-servers", match.group(1), "--latest")
            assert ran.code == 0, ran.stderr
            seen.clear()
            seen.update(json.loads(line)["charge_id"] for line in ran.stdout.splitlines())
            return seen == charges

        wait_until(all_decided, 90, 1.0, "not every charge decided")
    finally:
        code = stop_process(run)
    assert code == 0, stderr_path.read_text()[-2000:]
    assert "Traceback" not in stderr_path.read_text()


# --- decisions --------------------------------------------------------------------------------


@pytest.fixture
def decided(broker: BrokerInfo, topic_prefix: str, tmp_path: Path) -> Iterator[WorkerConfig]:
    """A running worker on its own topics with a generated day produced and decided."""
    config = worker_config(broker, topic_prefix)
    day = tmp_path / "day.jsonl"
    day.write_text(cli("generate", "--visits", "30", "--seed", "5").stdout)
    charges = {json.loads(line)["charge_id"] for line in day.read_text().splitlines()}
    with running_worker(config):
        ran = cli("produce", str(day), "--bootstrap-servers", broker.bootstrap_servers,
                  "--input-topic", config.input_topic)  # fmt: skip
        assert ran.code == 0, ran.stderr

        def done() -> bool:
            latest, _ = latest_decisions(config, [config.corrected_topic, config.held_topic])
            return set(latest) == charges

        wait_until(done, 60, 0.5, "the day was not decided")
        yield config


def _decision_flags(config: WorkerConfig) -> list[str]:
    assert config.bootstrap_servers
    return [
        "--bootstrap-servers", config.bootstrap_servers,
        "--corrected-topic", config.corrected_topic,
        "--held-topic", config.held_topic,
    ]  # fmt: skip


@pytest.mark.broker
def test_decisions_prints_what_the_worker_decided(decided: WorkerConfig) -> None:
    config = decided
    latest, published = latest_decisions(config, [config.corrected_topic, config.held_topic])

    ran = cli("decisions", *_decision_flags(config))
    assert ran.code == 0, ran.stderr
    records = [json.loads(line) for line in ran.stdout.splitlines()]
    assert len(records) == sum(published.values())
    assert {r["charge_id"] for r in records} == set(latest)
    assert ran.stderr.strip() == f"{len(records)} decision records"

    ran = cli("decisions", *_decision_flags(config), "--latest")
    assert ran.code == 0, ran.stderr
    current = [json.loads(line) for line in ran.stdout.splitlines()]
    assert [d["charge_id"] for d in current] == sorted(latest)
    for line in current:
        expected = latest[line["charge_id"]]
        assert line["status"] == expected.status.value
        assert line["decision_version"] == expected.decision_version

    some = sorted(latest)[:2]
    ran = cli("decisions", *_decision_flags(config), *(f"--charge-id={c}" for c in some))
    assert ran.code == 0, ran.stderr
    assert {json.loads(line)["charge_id"] for line in ran.stdout.splitlines()} == set(some)


@pytest.mark.broker
def test_decisions_follow_prints_new_decisions_until_sigterm(
    decided: WorkerConfig, tmp_path: Path
) -> None:
    config = decided
    out_path = tmp_path / "follow.out"
    with out_path.open("wb") as out:
        follow = subprocess.Popen(
            [
                charge_capture_bin(),
                "decisions",
                *_decision_flags(config),
                "--follow",
                "--charge-id",
                "C-FOLLOW",
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            env=clean_env(),
        )
    try:
        late = tmp_path / "late.jsonl"
        late.write_text(_lines(event_dict(event_id="E-FOLLOW", charge_id="C-FOLLOW", units=2)))
        ran = cli("produce", str(late), "--bootstrap-servers", config.bootstrap_servers or "",
                  "--input-topic", config.input_topic)  # fmt: skip
        assert ran.code == 0, ran.stderr

        def printed() -> bool:
            assert follow.poll() is None, follow.stderr
            return bool(out_path.read_text().strip())

        wait_until(printed, 60, 0.2, "--follow printed nothing")
        (line,) = out_path.read_text().splitlines()
        assert json.loads(line)["status"] == "CORRECTED"  # units cut to 1
    finally:
        follow.send_signal(signal.SIGTERM)
        code = follow.wait(timeout=10)
        stderr = follow.stderr.read().decode() if follow.stderr else ""
    assert code == 0 and "Traceback" not in stderr, stderr
    assert stderr.strip() == "1 decision records"


@pytest.mark.broker
def test_decisions_on_missing_topics_says_to_create_them(broker: BrokerInfo) -> None:
    ran = cli("decisions", "--bootstrap-servers", broker.bootstrap_servers,
              "--corrected-topic", "no.such.corrected")  # fmt: skip
    one_line_error(ran, 78, "topic no.such.corrected", "charge-capture topics")


@pytest.fixture
def misadvertising_broker(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real Tansu broker that advertises an address nothing listens on (a container's
    `localhost`, a name only the cluster network resolves): (where it listens, what it says)."""
    from worker.errors import BrokerStartError
    from worker.kafka.embedded import _tansu_binary

    try:
        binary = _tansu_binary()
    except BrokerStartError as missing:
        pytest.skip(str(missing))
    listen, advertised = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with (tmp_path / "tansu.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                f"tcp://{listen}",
                "--advertised-listener-url",
                f"tcp://{advertised}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        host, port = listen.split(":")

        def listening() -> bool:
            assert proc.poll() is None, (tmp_path / "tansu.log").read_text()
            try:
                socket.create_connection((host, int(port)), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_until(listening, 30, 0.05, "tansu did not listen")
        yield listen, advertised
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_broker_advertising_an_unreachable_address_is_named(
    misadvertising_broker: tuple[str, str],
) -> None:
    listen, advertised = misadvertising_broker
    ran = cli("topics", "--bootstrap-servers", listen)
    one_line_error(
        ran, 69, f"{listen}: it answers but advertises {advertised}, which does not answer"
    )
    assert ran.seconds < 15
