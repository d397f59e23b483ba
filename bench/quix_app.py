"""The peer for bench.peer_quix: Quix Streams doing a per-key stateful copy, exactly-once.

Runs in its own virtualenv (`make bench-peer` builds `.venv-peer`): Quix Streams pins a
confluent-kafka older than the one the project's tests use, so it never enters the project's
environment. Imports nothing of the project.

Per record: the count of records seen for its key read from and written to Quix's state
(RocksDB, with its changelog topic), and the value copied to the output topic, all in Kafka
transactions committed every `--commit-interval` seconds. Prints one line of JSON: records,
seconds from the first record processed to the final commit, events/s.

    python bench/quix_app.py --bootstrap HOST:PORT --input T --output T2 --records N
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from typing import Any

from quixstreams import Application, State


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--group", default="bench-quix")
    parser.add_argument("--commit-interval", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group,
            auto_offset_reset="earliest",
            processing_guarantee="exactly-once",
            commit_interval=args.commit_interval,
            state_dir=state_dir,
        )
        source = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
        sink = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")
        seen = {"records": 0, "first": 0.0}
        done = threading.Event()

        def count(value: Any, state: State) -> Any:
            if not seen["records"]:
                seen["first"] = time.monotonic()
            state.set("count", state.get("count", 0) + 1)
            seen["records"] += 1
            if seen["records"] >= args.records and not done.is_set():
                done.set()
                app.stop()  # the loop ends after this record; the checkpoint commits on exit
            return value

        app.dataframe(source).apply(count, stateful=True).to_topic(sink)
        app.run()
        seconds = time.monotonic() - seen["first"]
    print(
        json.dumps(
            {
                "records": seen["records"],
                "seconds": round(seconds, 3),
                "events_per_s": round(seen["records"] / seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
