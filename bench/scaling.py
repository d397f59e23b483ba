"""One worker process against several, on the same input, on this machine (broker included).

One broker (KAFKA_BOOTSTRAP_SERVERS, else the embedded Tansu) and one input topic of generated
events (`--partitions`, 6). Then the worker, each time under a fresh app id (its own group,
state and outputs), decides the input from the beginning: first one `charge-capture run`
process, then `--processes` (2) of them, as one unit (`run --processes N`, as deployed) or,
with `--separate`, as N `run` processes started together. The group's committed offsets are
read every 200 ms; the rate counts from the first commit to the commit that reaches the end of
the input, so the group join is left out but a rebalance during the run is not
(bench.worker_processes).

    python -m bench.scaling [--events 150000] [--processes 2] [--separate]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

from bench.common import bench_broker
from bench.stream_throughput import generated_events, worker_configs
from bench.worker_processes import run_processes
from worker.cli.cluster import produce_events
from worker.kafka.admin import ensure_topics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--separate", action="store_true", help="N separate run processes, not one unit"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    run = uuid.uuid4().hex[:8]
    n = args.processes
    with bench_broker() as (bootstrap, kind), tempfile.TemporaryDirectory() as tmp:
        print(f"broker: {kind}", file=sys.stderr, flush=True)
        (one, many), _ = worker_configs(run, 2, args.partitions)
        one, many = (replace(c, bootstrap_servers=bootstrap) for c in (one, many))
        ensure_topics(one)
        events = generated_events(args.events, args.seed)
        produce_events(one, events)
        single, single_join = run_processes(one, 1, len(events), Path(tmp))
        print(f"1 process: {single:,.0f} events/s", file=sys.stderr, flush=True)
        if args.separate:
            several, several_join = run_processes(many, n, len(events), Path(tmp))
        else:
            unit = ("--processes", str(n))
            several, several_join = run_processes(many, 1, len(events), Path(tmp), *unit)
    how = f"{n} separate processes" if args.separate else f"run --processes {n}"
    print(f"broker: {kind}; {args.partitions} partitions; {len(events)} events")
    print(f"  1 worker process: {single:>8,.0f} events/s (first commit after {single_join:.1f} s)")
    print(f"  {how}: {several:>8,.0f} events/s (first commit after {several_join:.1f} s)")
    print(f"  scaling: {several / single:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
