"""A broker the tests can take away: a dedicated embedded Tansu whose advertised address is a
loopback TCP proxy (tests/tcp_proxy.py), so every client connection (bootstrap, then the
advertised listener) passes the proxy and `cut()` takes the whole cluster away.

Plus what the outage tests check on a cluster: the group's committed offsets, a steady feeder
whose producer buffers through a cut, /readyz, and the outputs against the offline fold.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from rules.model import ChargeDecision, ChargeEvent, DecisionStatus
from rules.pack import load_packs
from rules.visit import decide_events
from tests.factories import findings, lean
from tests.tcp_proxy import TcpProxy
from worker.config import WorkerConfig
from worker.kafka.embedded import EmbeddedBroker, free_loopback_port
from worker.kafka.reading import read_to_end
from worker.processing.table import latest_decisions
from worker.serde.codec import Codec


@dataclass
class ProxiedBroker:
    proxy: TcpProxy
    broker: EmbeddedBroker

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers  # the proxy's address


@contextlib.contextmanager
def proxied_broker() -> Iterator[ProxiedBroker]:
    target = free_loopback_port()
    with TcpProxy(target) as proxy:
        broker = EmbeddedBroker(port=target, advertised_port=proxy.port).start()
        try:
            yield ProxiedBroker(proxy, broker)
        finally:
            proxy.restore()
            broker.stop()


def readyz(port: int, path: str = "/readyz") -> int:
    """The status of the worker's /readyz (or another path); 0 when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


class Committed:
    """The worker group's committed offsets on the input, summed (OffsetFetch, never a join)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=config.bootstrap_servers,
            group_id=config.group,
            enable_auto_commit=False,
            request_timeout_ms=5000,
            reconnect_backoff_max_ms=200,
        )
        self.tps = [TopicPartition(config.input_topic, p) for p in range(config.partitions)]

    def total(self) -> int | None:
        """None while the broker does not answer."""
        try:
            return sum(self.consumer.committed(tp, timeout_ms=2000) or 0 for tp in self.tps)
        except Exception:  # the cut: no answer this time
            return None

    def close(self) -> None:
        self.consumer.close(autocommit=False, timeout_ms=500)


class Feeder(threading.Thread):
    """Sends `events` at `per_s` through the proxy; its producer buffers them during a cut."""

    def __init__(self, config: WorkerConfig, events: list[ChargeEvent], per_s: float) -> None:
        super().__init__(name="feeder", daemon=True)
        self.config, self.events, self.per_s = config, events, per_s
        self.sent = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        codec = Codec()
        producer = KafkaProducer(
            bootstrap_servers=self.config.bootstrap_servers,
            acks="all",
            linger_ms=5,
            delivery_timeout_ms=600_000,
            reconnect_backoff_max_ms=500,
        )
        try:
            for event in self.events:
                if self.halt.wait(1 / self.per_s):
                    return
                producer.send(
                    self.config.input_topic,
                    key=event.patient_id.encode(),
                    value=codec.encode_event(event),
                )
                self.sent += 1
            producer.flush(timeout=300)
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            producer.close(timeout=5)


def check_outputs(config: WorkerConfig, events: list[ChargeEvent]) -> int:
    """Every charge decided as the offline fold decides it, and no (charge_id,
    decision_version, topic) carrying two different records; the count of exact repeats
    (Tansu shows aborted transactions, so redone batches may repeat identical records)."""
    assert config.bootstrap_servers
    outputs = [config.corrected_topic, config.held_topic]
    codec = Codec()
    copies: dict[tuple[str, int, str], list[ChargeDecision]] = defaultdict(list)
    for record in read_to_end(config.bootstrap_servers, outputs):
        decision = codec.decode_decision(record.value)
        copies[(decision.charge_id, decision.decision_version, record.topic)].append(decision)
    conflicting = {k: v for k, v in copies.items() if any(d != v[0] for d in v[1:])}
    assert not conflicting, f"same (charge, version, topic), different records: {conflicting}"
    latest, _ = latest_decisions(config.bootstrap_servers, outputs, codec)
    expected = decide_events([lean(e) for e in events], load_packs())
    assert set(latest) == set(expected) == {e.charge_id for e in events}
    wrong = {}
    for charge_id, (_, verdict) in expected.items():
        want = DecisionStatus.VOIDED if verdict is None else verdict.status
        got = latest[charge_id]
        if got.status != want or (
            verdict is not None and findings(got.holds) != findings(verdict.holds)
        ):
            wrong[charge_id] = (got.status.value, want.value)
    assert not wrong, f"{len(wrong)} charges decided unlike the offline fold: {wrong}"
    assert not list(read_to_end(config.bootstrap_servers, [config.dlq_topic]))
    return sum(len(v) - 1 for v in copies.values())
