"""The cycle collector, tuned for a stream processor's heap.

Profiled, CPython's default thresholds (700, 10, 10) cost the worker 15-25% of its main
thread: every batch allocates tens of thousands of short-lived containers (records, futures,
decisions), so generation 0 runs every few events and the older generations, which hold the
rule packs and their NCCI tables (hundreds of thousands of objects), are walked again and
again though nothing in them is ever garbage.

So, once the rule packs are loaded:
- `gc.freeze()` moves everything alive to the permanent generation, which the collector never
  walks. Safe because what is alive then lives as long as the process (modules, the packs,
  the codecs); an object that dies later is still freed by reference counting, and the only
  cost would be a reference cycle among frozen objects becoming garbage, which none of them
  does (they are dropped only at exit).
- generation 0 collects every 50,000 allocations instead of 700. Refcounting frees the hot
  path's objects as they go (none of them form cycles: records, tuples, msgspec structs that
  msgspec does not even track); the threshold only bounds how much cyclic garbage, from
  kafka-python's futures and callbacks, waits to be collected: a few MB at most.
State does not weigh on the collector either way: visits at rest are bytes, which it ignores.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 100)


def settle_collector() -> None:
    """Freeze what is alive now and collect the young generation less often (see above)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
