"""One worker process against two, on the same input, on this machine (broker included).

One broker (KAFKA_BOOTSTRAP_SERVERS, else the embedded Tansu) and one input topic of generated
events (`--partitions`, 6). Then `charge-capture run` as separate processes, each time under a
fresh app id (its own group, state and outputs), deciding the input from the beginning:
first one process, then `--instances` (2) started together. The group's committed offsets are
read every 200 ms; the rate counts from the first commit to the commit that reaches the end of
the input, so the group join is left out but a rebalance during the run is not.

    python -m bench.scaling [--events 150000] [--instances 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from bench.common import bench_broker
from bench.stream_throughput import generated_events, worker_configs
from worker.cli.cluster import produce_events
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics

POLL_S = 0.2


def _bin() -> str:
    beside = Path(sys.executable).parent / "charge-capture"
    return str(beside) if beside.is_file() else shutil.which("charge-capture") or "charge-capture"


def _argv(config: WorkerConfig, instance: str) -> list[str]:
    assert config.bootstrap_servers
    return [_bin(), "run", "--bootstrap-servers", config.bootstrap_servers,
            "--app-id", config.app_id, "--instance-id", instance, "--http-port", "0",
            "--input-topic", config.input_topic, "--corrected-topic", config.corrected_topic,
            "--held-topic", config.held_topic, "--dlq-topic", config.dlq_topic,
            "--partitions", str(config.partitions)]  # fmt: skip


def _committed(reader: KafkaConsumer, topic: str, partitions: int) -> int:
    """The group's committed offsets on `topic`, summed (OffsetFetch, as a restore reads them)."""
    total = 0
    for number in range(partitions):
        offset = reader.committed(TopicPartition(topic, number), timeout_ms=5000)
        total += offset or 0
    return total


def _run(config: WorkerConfig, instances: int, events: int, logs: Path) -> tuple[float, float]:
    """(events/s from first commit to the end, seconds from start to first commit)."""
    ensure_topics(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")}
    procs = []
    # Outside the group (it never joins or commits): it only reads the group's offsets.
    reader = KafkaConsumer(bootstrap_servers=config.bootstrap_servers, group_id=config.group,
                           enable_auto_commit=False)  # fmt: skip
    started = time.monotonic()
    try:
        for n in range(instances):
            out = (logs / f"{config.app_id}-{n}.log").open("wb")
            procs.append(subprocess.Popen(_argv(config, f"w{n}"), stdout=out, stderr=out, env=env))
        first_at, first_done = 0.0, 0
        while True:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited {proc.returncode}; logs in {logs}")
            done = _committed(reader, config.input_topic, config.partitions)
            now = time.monotonic()
            if done and not first_at:
                first_at, first_done = now, done
            if done >= events:
                return (events - first_done) / (now - first_at), first_at - started
            if now - started > 1800:
                raise TimeoutError("the workers did not reach the end of the input")
            time.sleep(POLL_S)  # sampling the committed offsets, not synchronisation
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        reader.close(autocommit=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    run = uuid.uuid4().hex[:8]
    with bench_broker() as (bootstrap, kind), tempfile.TemporaryDirectory() as tmp:
        print(f"broker: {kind}", file=sys.stderr, flush=True)
        (one, many), _ = worker_configs(run, 2, args.partitions)
        one, many = (replace(c, bootstrap_servers=bootstrap) for c in (one, many))
        ensure_topics(one)
        events = generated_events(args.events, args.seed)
        produce_events(one, events)
        single, single_join = _run(one, 1, len(events), Path(tmp))
        print(f"1 process: {single:,.0f} events/s", file=sys.stderr, flush=True)
        several, several_join = _run(many, args.instances, len(events), Path(tmp))
    print(f"broker: {kind}; {args.partitions} partitions; {len(events)} events")
    print(
        f"  1 worker process:   {single:>8,.0f} events/s (first commit after {single_join:.1f} s)"
    )
    print(
        f"  {args.instances} worker processes: {several:>8,.0f} events/s "
        f"(first commit after {several_join:.1f} s)"
    )
    print(f"  scaling: {several / single:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
