"""The worker beside a peer: Quix Streams doing a per-key stateful copy with exactly-once,
on the same broker and the same framed Avro events.

One broker (KAFKA_BOOTSTRAP_SERVERS, else the embedded Tansu), one input topic of generated
charge events, then, each from the beginning of the input:
1. kafka-python's own transactional passthrough (bench.passthrough: the ceiling);
2. the worker, exactly-once (decode, rules, visit state and its changelog, transactions);
3. Quix Streams 3 (`bench/quix_app.py`, in `.venv-peer`, which `make bench-peer` builds):
   a per-key counter in its RocksDB state with its changelog, the value copied, exactly-once,
   committing every 100 ms as the worker does. It decodes nothing and decides nothing, so it
   is a floor for what a Quix Streams version of the worker would cost, not its equal.

    python -m bench.peer_quix [--events 100000] [--peer-python .venv-peer/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

from bench.common import bench_broker
from bench.passthrough import passthrough_beside
from bench.stream_throughput import generated_events, run_worker, worker_configs
from worker.cli.cluster import produce_events
from worker.kafka.admin import TopicSpec, create_topics, ensure_topics

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-peer" / "bin" / "python"))
    args = parser.parse_args(argv)
    if not Path(args.peer_python).exists():
        print(f"{args.peer_python} not found: run `make bench-peer`", file=sys.stderr)
        return 2
    run = uuid.uuid4().hex[:8]
    with bench_broker() as (bootstrap, kind):
        print(f"broker: {kind}", file=sys.stderr, flush=True)
        (config,), _ = worker_configs(run, 1, args.partitions)
        config = replace(config, bootstrap_servers=bootstrap)
        # Quix Streams derives its changelog topic's retention from the input's `retention.ms`,
        # which Tansu describes only when the topic was created with it.
        week = str(7 * 24 * 3600 * 1000)
        create_topics(
            bootstrap, [TopicSpec(config.input_topic, args.partitions, {"retention.ms": week})]
        )
        ensure_topics(config)
        events = generated_events(args.events, args.seed)
        produce_events(config, events)
        quix_topic = f"bench.{run}.quix"
        create_topics(bootstrap, [TopicSpec(quix_topic, args.partitions)])
        passthrough = passthrough_beside(
            bootstrap, config.input_topic, f"bench.{run}", args.partitions, len(events)
        )
        worker = run_worker(config, len(events))
        peer = [args.peer_python, str(ROOT / "bench" / "quix_app.py"), "--bootstrap", bootstrap,
                "--input", config.input_topic, "--output", quix_topic,
                "--records", str(len(events)), "--group", f"bench.{run}.quix"]  # fmt: skip
        ran = subprocess.run(
            peer,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if ran.returncode != 0:
            print(ran.stderr[-4000:], file=sys.stderr)
            return 1
        quix = json.loads(ran.stdout.strip().splitlines()[-1])
    rows = [
        ("kafka-python txn passthrough (copy, no state)", passthrough.events_per_s),
        ("Quix Streams 3, exactly-once, per-key count + copy", float(quix["events_per_s"])),
        ("charge-capture worker, exactly-once (decode, rules, visits)", worker.rate),
    ]
    print(f"broker: {kind}; {args.partitions} partitions; {len(events)} events")
    for name, rate in rows:
        print(f"  {name:<62}{rate:>10,.0f} events/s  {rate / passthrough.events_per_s:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
