"""`charge-capture run --processes N`: N worker processes on one machine, run as one unit.

Why processes: the decide path is Python, so one worker process decides on one core at a time
(the GIL), however many the machine has. Partitions are the unit of parallelism: N members of
the same consumer group each own some partitions with their state, as N instances on N
machines would, and nothing about them is shared but the broker.

Each member is `charge-capture run` itself: the unit's own command line, then
- `--processes 1`;
- `--instance-id <instance id>-<k>`, k from 1: its own transactional.id, the same each time the
  unit starts, so every member fences its own previous incarnation;
- `--http-port <port + k - 1>`: its own /metrics, /healthz and /readyz (0 stays off);
- `--bootstrap-servers` of the cluster, or of the embedded broker the unit started.
Members inherit the unit's environment (its CHARGE_CAPTURE_* variables) and its stdout, where
each log line names its `instance`.

The unit lives and dies as one, as a Kafka Streams client does by default (SHUTDOWN_CLIENT):
- SIGTERM or SIGINT to the unit goes on to every member as SIGTERM; once all have stopped the
  unit exits 0 (a member that has not stopped after STOP_TIMEOUT_S is killed);
- the first member to exit on its own stops the others: a clean exit (stopped directly, as
  systemd does to every process of a service) ends the unit cleanly; an exit code ends it
  with that code (the member's CRITICAL line says why), a member killed by signal S with
  128 + S. Whatever runs the unit (systemd, Kubernetes) sees it and restarts it.
A member stopped or killed at any point loses nothing: its open transaction is aborted and
its partitions are decided again from their last commit, by it or another member.
"""

from __future__ import annotations

import functools
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from worker.config import WorkerConfig
from worker.kafka.embedded import die_with_parent
from worker.observability.logs import fields

log = logging.getLogger("charge_capture")

STOP_TIMEOUT_S = 60.0  # a member's clean stop takes about 2 s; past this it is killed
CLEAN_STOPS = (-signal.SIGTERM, -signal.SIGINT)  # killed by the stop itself, before its handler


@dataclass(frozen=True)
class Member:
    number: int
    instance_id: str
    argv: list[str]


def command(argv: Sequence[str]) -> list[str]:
    """`charge-capture ARGV` under this interpreter, with its -P (the compiled benchmarks run
    with it, so the checkout's sources stay off the path)."""
    return [sys.executable, *(["-P"] if sys.flags.safe_path else []), "-m", "worker.cli", *argv]


def members(argv: Sequence[str], config: WorkerConfig) -> list[Member]:
    """The command line of each member: the unit's own (`argv`, from the verb on), then what
    makes the member one of N. Flags given later win (argparse), so these override."""
    unit = command(argv)
    found = []
    for number in range(1, config.processes + 1):
        instance = f"{config.instance_id}-{number}"
        port = config.http_port + number - 1 if config.http_port else 0
        own = ["--processes", "1", "--instance-id", instance, "--http-port", str(port)]
        if config.bootstrap_servers:
            own += ["--bootstrap-servers", config.bootstrap_servers]
        found.append(Member(number, instance, [*unit, *own]))
    return found


class Unit:
    """The members' processes: started together, stopped together (see the module)."""

    def __init__(self, members: list[Member], stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.members = members
        self.stop_timeout_s = stop_timeout_s
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._exits: queue.Queue[tuple[Member, int]] = queue.Queue()
        self._stopping = threading.Event()
        self._kill_at = 0.0  # once stopping: when members still running are killed

    def run(self) -> int:
        """Start every member, wait for all to exit; the unit's exit code."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for member in self.members:
                if self._stopping.is_set():  # a signal while starting: start no more
                    break
                self._start(member)
            return self._wait_all()
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def stop(self) -> None:
        """Every member still running gets SIGTERM (its clean stop)."""
        if not self._stopping.is_set():
            self._kill_at = time.monotonic() + self.stop_timeout_s
            self._stopping.set()
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def _start(self, member: Member) -> None:
        proc = subprocess.Popen(
            member.argv,
            stdin=subprocess.DEVNULL,
            # A member orphaned by a killed unit stops cleanly rather than decide on alone.
            preexec_fn=functools.partial(die_with_parent, signal.SIGTERM)
            if sys.platform.startswith("linux")
            else None,
        )
        self._procs[member.number] = proc
        log.info("worker process started", extra=fields(member=member.number, pid=proc.pid))
        threading.Thread(
            target=lambda: self._exits.put((member, proc.wait())),
            name=f"member-{member.number}-wait",
            daemon=True,
        ).start()

    def _wait_all(self) -> int:
        code = 0
        for _ in self._procs:
            member, returned = self._next_exit()
            on_its_own = not self._stopping.is_set()
            failure = _failure_code(returned)
            if on_its_own or failure:
                log.log(
                    logging.ERROR if failure else logging.INFO,
                    "worker process exited",
                    extra=fields(member=member.number, exit_code=returned),
                )
            if failure and not code:
                code = failure
            if on_its_own:
                self.stop()  # the unit goes with it
        log.info("worker processes stopped", extra=fields(exit_code=code))
        return code

    def _next_exit(self) -> tuple[Member, int]:
        # Unbounded until the stop begins (a signal handler runs even while this waits).
        while not self._stopping.is_set():
            try:
                return self._exits.get(timeout=1.0)
            except queue.Empty:
                continue
        try:
            return self._exits.get(timeout=max(self._kill_at - time.monotonic(), 0.0))
        except queue.Empty:
            for proc in self._procs.values():
                if proc.poll() is None:
                    proc.kill()
            return self._exits.get(timeout=10.0)


def _failure_code(returned: int) -> int:
    """The unit's exit code for a member's: 0 for a clean stop."""
    if returned == 0 or returned in CLEAN_STOPS:
        return 0
    if returned < 0:
        return 128 - returned  # killed by a signal, as a shell reports it
    return returned
