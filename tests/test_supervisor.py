"""`run --processes N`: N worker processes as one unit (worker.cli.supervisor).

The unit's rules (signals passed on, the first exit ends it, its exit code) are tested with
small Python processes standing in for members; the last test runs a real unit of two
`charge-capture run` members against the test broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from rules.model import ChargeEvent
from tests.brokers import BrokerInfo
from tests.helpers import wait_until
from tests.test_schema_registry_worker import (
    assert_decided_as_offline,
    assert_no_two_records_differ,
)
from tests.worker_process import GroupProgress, WorkerProcess, scrape, worker_config
from worker.cli import build_parser, main
from worker.cli.cluster import produce_events
from worker.cli.options import from_args
from worker.cli.supervisor import Member, Unit, members
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.offline.sample import generate_events
from worker.processing.table import latest_decisions
from worker.serde.codec import Codec

# A stand-in member: says it is ready (its pid in DIR/NAME.ready), then by MODE
#   wait   until SIGTERM, noted in DIR/NAME.stopped, then exit 0;
#   ignore SIGTERM and wait forever;
#   exitN  exit N once the test writes to the FIFO DIR/GO (blocking on it: an awaited event).
MEMBER = """
import os, signal, sys
from pathlib import Path
folder, name, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def stopped(*_):
    (folder / f"{name}.stopped").write_text("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else stopped)
(folder / f"{name}.ready").write_text(str(os.getpid()))
if mode.startswith("exit"):
    with open(folder / sys.argv[4]) as go:  # returns once the test's writer has closed it
        go.read()
    sys.exit(int(mode[4:]))
while True:
    signal.pause()
"""


def _config(argv: list[str]) -> WorkerConfig:
    args = build_parser().parse_args(argv)
    config: WorkerConfig = from_args(args)
    return config


def test_each_member_runs_the_units_command_as_its_own_instance() -> None:
    argv = ["run", "--processes", "3", "--instance-id", "pod-0", "--http-port", "9500"]
    argv += ["--app-id", "billing", "--bootstrap-servers", "kafka:9092"]
    found = members(argv, _config(argv))
    assert [m.number for m in found] == [1, 2, 3]
    for member in found:
        assert member.argv[:3] == [sys.executable, "-m", "worker.cli"]
        own = _config(member.argv[3:])
        assert own.processes == 1
        assert own.instance_id == member.instance_id == f"pod-0-{member.number}"
        assert own.transactional_id == f"billing-pod-0-{member.number}"
        assert own.http_port == 9500 + member.number - 1
        assert (own.app_id, own.group, own.bootstrap_servers) == (
            "billing",
            "billing",
            "kafka:9092",
        )


def test_members_of_a_unit_without_http_serve_none_and_get_the_embedded_broker() -> None:
    argv = ["run", "--processes", "2", "--http-port", "0"]
    config = _config(argv)
    config.bootstrap_servers = "127.0.0.1:40001"  # as the unit's embedded broker sets it
    for member in members(argv, config):
        own = _config(member.argv[3:])
        assert (own.http_port, own.bootstrap_servers) == (0, "127.0.0.1:40001")


def test_ports_past_65535_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--processes", "3", "--http-port", "65534"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "--http-port 65534 with --processes 3 needs ports up to 65536" in err


def _members(folder: Path, *modes: list[str]) -> list[Member]:
    script = folder / "member.py"
    script.write_text(MEMBER)
    return [
        Member(n, f"m{n}", [sys.executable, str(script), str(folder), f"m{n}", *mode])
        for n, mode in enumerate(modes, start=1)
    ]


def _when_ready(folder: Path, names: list[str], then: Callable[[], None]) -> threading.Thread:
    """`then()` on another thread once every member named is up (the unit blocks the main
    thread, where signal handlers run)."""

    def go() -> None:
        wait_until(
            lambda: all((folder / f"{n}.ready").exists() for n in names),
            30,
            message="stand-in members did not start",
        )
        then()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def _pid(folder: Path, name: str) -> int:
    return int((folder / f"{name}.ready").read_text())


def _run(unit: Unit, folder: Path, limit_s: float = 30.0) -> int:
    """The unit's exit code; a unit still waiting after `limit_s` fails the test (its
    members are killed so that it returns)."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        for ready in folder.glob("*.ready"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(ready.read_text()), signal.SIGKILL)

    timer = threading.Timer(limit_s, expire)
    timer.start()
    try:
        code = unit.run()
    finally:
        timer.cancel()
    assert not expired.is_set(), f"the unit did not end within {limit_s} s"
    return code


def test_sigterm_to_the_unit_stops_every_member_and_exits_0(tmp_path: Path) -> None:
    unit = Unit(_members(tmp_path, ["wait"], ["wait"]))
    _when_ready(tmp_path, ["m1", "m2"], lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert _run(unit, tmp_path) == 0
    assert (tmp_path / "m1.stopped").exists() and (tmp_path / "m2.stopped").exists()
    assert signal.getsignal(signal.SIGTERM) != unit._on_signal  # its handlers given back


def test_a_member_that_fails_stops_the_others_and_the_unit_exits_with_its_code(
    tmp_path: Path,
) -> None:
    os.mkfifo(tmp_path / "go")
    unit = Unit(_members(tmp_path, ["wait"], ["exit78", "go"]))
    # m2 exits 78 once m1 is up too, so the unit has someone to stop.
    _when_ready(tmp_path, ["m1", "m2"], lambda: (tmp_path / "go").write_text("go"))
    assert _run(unit, tmp_path) == 78
    assert (tmp_path / "m1.stopped").exists()


def test_a_member_killed_by_a_signal_ends_the_unit_with_128_plus_it(tmp_path: Path) -> None:
    unit = Unit(_members(tmp_path, ["wait"], ["wait"]))
    _when_ready(tmp_path, ["m1", "m2"], lambda: os.kill(_pid(tmp_path, "m2"), signal.SIGKILL))
    assert _run(unit, tmp_path) == 128 + signal.SIGKILL
    assert (tmp_path / "m1.stopped").exists()


def test_a_member_that_does_not_stop_in_time_is_killed(tmp_path: Path) -> None:
    unit = Unit(_members(tmp_path, ["wait"], ["ignore"]), stop_timeout_s=0.5)
    _when_ready(tmp_path, ["m1", "m2"], unit.stop)
    assert _run(unit, tmp_path) == 128 + signal.SIGKILL  # m2 did not stop cleanly: the unit says so
    assert (tmp_path / "m1.stopped").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(_pid(tmp_path, "m2"), 0)


def _two_free_ports() -> int:
    """A port P with P + 1 free as well (the members' HTTP ports)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


@pytest.mark.broker
def test_a_unit_of_two_processes_decides_a_stream_as_check_does(
    broker: BrokerInfo, topic_prefix: str, tmp_path: Path
) -> None:
    config = worker_config(broker.bootstrap_servers, topic_prefix, partitions=6)
    ensure_topics(config)
    events = [ChargeEvent.model_validate(e) for e in generate_events(150, 2024)]
    port = _two_free_ports()
    unit = WorkerProcess(config, "unit", tmp_path, "--processes", "2", http_port=port)
    progress = GroupProgress(config.bootstrap_servers or "", config.group, [config.input_topic])
    try:
        unit.start()
        produce_events(config, events)
        progress.wait_drained(120, unit, records=len(events))

        def shared() -> bool:
            owned = [
                scrape(p).get("charge_capture_partitions_assigned", 0) for p in (port, port + 1)
            ]
            return all(n >= 1 for n in owned) and sum(owned) == 6

        wait_until(shared, 30, message="the members do not share the partitions")
        assert unit.stop() == 0, unit.log_tail()
    finally:
        unit.stop()
        progress.close()
    started = {e["transactional_id"] for e in unit.log_entries() if e["msg"] == "worker started"}
    assert started == {f"{config.app_id}-unit-1", f"{config.app_id}-unit-2"}
    stopped = {e["instance"] for e in unit.log_entries() if e["msg"] == "worker stopped"}
    assert stopped == {"unit-1", "unit-2"}
    latest, _ = latest_decisions(config, [config.corrected_topic, config.held_topic])
    assert_decided_as_offline(latest, events)
    assert assert_no_two_records_differ(config, Codec()) >= len(latest)
