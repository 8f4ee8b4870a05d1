"""The garbage collector of a process that streams rooms: out of the way of the streams it serves.

A full collection walks every object the process tracks and stops every stream while it does: with rooms'
logs and state in memory, 50–300 ms (docs/benchmarks.md §3). Three settings keep those pauses rare:

- what start-up made lives as long as the process, so it is frozen out of the collector's walks (the price
  table, which would load at the first priced turn, is loaded first);
- a young collection waits for 7,000 new objects rather than Python's 700: a streaming server makes and
  drops objects for every chunk, and most die young by their reference counts, so walking them ten times
  as often cost CPU and found little; a full collection then comes ten times later too;
- a full collection waits for 100 collections of the middle generation rather than Python's 10.

Objects are freed by their reference counts as before; only garbage in reference cycles waits longer to be
found (the store, the runs and the adapters leave almost none: tests/durable/test_heap.py).
"""

from __future__ import annotations

import gc

from moot.pricing import load_table

YOUNG_COLLECTION_AFTER = 7_000  # allocations less frees between young collections (Python's default: 700)
FULL_COLLECTION_AFTER = 100  # collections of the middle generation between full ones (Python's default: 10)


def settle_heap() -> None:
    """Called once a server or worker has started, before it serves."""
    load_table()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, middle, FULL_COLLECTION_AFTER)
