"""How the process's cyclic garbage collector is tuned once a fleet's state is loaded.

The cyclic GC's pauses are what an operator feels under load (benchmarks/: ui_latency and
key_latency), and at fleet scale they are the part of a refresh that grows faster than the fleet:
each collection walks the objects allocated (young) or survived (middle) since the last, and a
full one the whole heap. With Python's defaults a full refresh of 1,000 connections took 3.4 s
against 2.2 s with the collector off; with the thresholds below and the synced state frozen, 2.2 s
(the same run, fake QMP servers, 8 nodes x 4 bitmaps each).

Young collections every 5,000 allocations (about 4 ms each) and a middle one after every second
young one (about 6 ms): with 20,000 and 20 one middle collection took 100 ms once a 200-connection
fleet had synced, and with 20,000 and 2 they still took 15-30 ms. A full collection at most once
per 2,000 young ones (10 M allocations, a few minutes of an event flood).
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (5_000, 1, 1_000)


def settle_heap() -> None:
    """Move everything alive now (the program, its fleet's synced state) out of the collector's
    reach and collect less often from here on. Called once start-up or a fleet's first sync is
    done: the objects kept are long-lived, and what they leave behind is freed by reference
    counting (the state is frozen dataclasses, without cycles)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
