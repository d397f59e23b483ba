"""Replay throughput: ~100k generated charge events replayed from a topic into a file.

Starts the embedded broker (or uses KAFKA_BOOTSTRAP_SERVERS), produces the events keyed by
patient, then times kafka-python's own transactional passthrough over the same topic
(bench.passthrough: the ceiling) and `run_replay` over the whole topic (read, decode, decide,
write JSON lines), and prints their ratio.

    python -m bench.replay_throughput --visits 35000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import bench_broker
from bench.passthrough import passthrough_beside
from rules.model import ChargeEvent
from worker.cli.cluster import produce_events
from worker.config import WorkerConfig
from worker.kafka.admin import TopicSpec, create_topics
from worker.offline.sample import generate_events
from worker.replay.plan import FileOutput, ReplayOptions
from worker.replay.run import run_replay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--visits", type=int, default=35_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)

    run = uuid.uuid4().hex[:8]
    with bench_broker() as (bootstrap, broker_kind):
        print(broker_kind, file=sys.stderr)
        config = WorkerConfig(
            bootstrap_servers=bootstrap,
            app_id=f"bench-{run}",
            input_topic=f"bench.{run}.charges.captured",
            corrected_topic=f"bench.{run}.charges.corrected",
            held_topic=f"bench.{run}.charges.held",
            dlq_topic=f"bench.{run}.charges.dlq",
            partitions=args.partitions,
        )
        create_topics(bootstrap, [TopicSpec(config.input_topic, args.partitions)])
        events = [ChargeEvent.model_validate(e) for e in generate_events(args.visits, args.seed)]
        began = time.monotonic()
        produce_events(config, events)
        produced_s = time.monotonic() - began
        print(f"produced {len(events)} events in {produced_s:.1f} s", file=sys.stderr, flush=True)
        passthrough = passthrough_beside(
            bootstrap, config.input_topic, f"bench.{run}", args.partitions, len(events)
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "decisions.jsonl"
            report = run_replay(ReplayOptions(config=config, output=FileOutput(out)))
            size = out.stat().st_size
    print(
        f"events={report.records} decisions={report.decisions} dlq={report.dlq} "
        f"replay_s={report.replay_seconds:.2f} total_s={report.seconds:.2f} "
        f"file_bytes={size} events_per_s={report.events_per_s:.0f}"
    )
    ratio = report.events_per_s / passthrough.events_per_s
    print(
        f"passthrough (kafka-python txn copy) {passthrough.events_per_s:,.0f} events/s; "
        f"replay / passthrough: {ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
