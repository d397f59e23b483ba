"""`charge-capture run` as separate processes, timed by the group's committed offsets.

For the benchmarks that measure the worker as it is deployed (bench.scaling,
bench.stream_throughput's unit phase): no in-process hooks, so the rate counts from the
group's first commit to the commit that reaches the end of the input, sampled every
SAMPLE_S (the group join is left out; a rebalance during the run is not).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from worker.cli.supervisor import command
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics

SAMPLE_S = 0.2


def run_argv(config: WorkerConfig, instance: str, *extra: str) -> list[str]:
    """`charge-capture run` of `config`, started as `run --processes` starts its members."""
    assert config.bootstrap_servers
    return command(["run", "--bootstrap-servers", config.bootstrap_servers,
            "--app-id", config.app_id, "--instance-id", instance, "--http-port", "0",
            "--input-topic", config.input_topic, "--corrected-topic", config.corrected_topic,
            "--held-topic", config.held_topic, "--dlq-topic", config.dlq_topic,
            "--partitions", str(config.partitions), *extra])  # fmt: skip


def committed(reader: KafkaConsumer, topic: str, partitions: int) -> int:
    """The group's committed offsets on `topic`, summed (OffsetFetch, as a restore reads them)."""
    total = 0
    for number in range(partitions):
        offset = reader.committed(TopicPartition(topic, number), timeout_ms=5000)
        total += offset or 0
    return total


def run_processes(
    config: WorkerConfig, instances: int, events: int, logs: Path, *extra: str
) -> tuple[float, float]:
    """`instances` processes of `run` (each with `extra` flags) decide the input from the
    beginning: (events/s from the first commit to the end, seconds from start to it)."""
    ensure_topics(config)
    # The bench's own settings, not a deployment's (the schemas' place stays: the compiled
    # benchmarks set it).
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")}
    if "CHARGE_CAPTURE_SCHEMAS_DIR" in os.environ:
        env["CHARGE_CAPTURE_SCHEMAS_DIR"] = os.environ["CHARGE_CAPTURE_SCHEMAS_DIR"]
    procs = []
    # Outside the group (it never joins or commits): it only reads the group's offsets.
    reader = KafkaConsumer(bootstrap_servers=config.bootstrap_servers, group_id=config.group,
                           enable_auto_commit=False)  # fmt: skip
    started = time.monotonic()
    try:
        for n in range(instances):
            argv = run_argv(config, f"w{n}", *extra)
            with (logs / f"{config.app_id}-{n}.log").open("wb") as out:  # the child keeps its own
                procs.append(subprocess.Popen(argv, stdout=out, stderr=out, env=env))
        first_at, first_done = 0.0, 0
        while True:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited {proc.returncode}; logs in {logs}")
            done = committed(reader, config.input_topic, config.partitions)
            now = time.monotonic()
            if done and not first_at:
                first_at, first_done = now, done
            if done >= events:
                return (events - first_done) / (now - first_at), first_at - started
            if now - started > 1800:
                raise TimeoutError("the workers did not reach the end of the input")
            time.sleep(SAMPLE_S)  # sampling the committed offsets, not synchronisation
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        reader.close(autocommit=False)


def unit_config(config: WorkerConfig) -> WorkerConfig:
    """The same input as `config`, under an app id, group and outputs of its own."""
    name = f"{config.app_id}-unit"
    return replace(
        config,
        app_id=name,
        corrected_topic=f"{name}.corrected",
        held_topic=f"{name}.held",
        dlq_topic=f"{name}.dlq",
    )


def run_unit(config: WorkerConfig, events: int, processes: int) -> float:
    """Events/s of `run --processes N` deciding the input from the beginning."""
    with tempfile.TemporaryDirectory() as logs:
        rate, _ = run_processes(config, 1, events, Path(logs), "--processes", str(processes))
    return rate


def report_units(processes: int, passthroughs: list[float], units: list[float]) -> None:
    """The unit's rows: each round's rate and its ratio to the round's passthrough."""
    ratios = [u / p for u, p in zip(units, passthroughs, strict=True)]
    print(f"worker as one unit of {processes} processes (run --processes {processes}):")
    for number, (rate, ratio) in enumerate(zip(units, ratios, strict=True), start=1):
        print(f"  round {number}: {rate:>8,.0f} events/s, {ratio:.2f} x its passthrough")
    print(
        f"  median: {statistics.median(units):,.0f} events/s; unit / passthrough (one process) "
        f"median of the rounds' ratios: {statistics.median(ratios):.2f}"
    )
