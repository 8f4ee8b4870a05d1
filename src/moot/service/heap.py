"""The garbage collector of a process that streams rooms: out of the way of the streams it serves.

A full collection walks every object the process tracks and stops every stream while it does: with rooms'
logs and state in memory, 50–200 ms (docs/benchmarks.md §3). Two settings keep those pauses rare:

- what start-up made lives as long as the process, so it is frozen out of the collector's walks (the price
  table, which would load at the first priced turn, is loaded first);
- a full collection waits for 100 collections of the middle generation rather than Python's 10. Objects
  are freed by their reference counts as before; only garbage in reference cycles waits longer (at most
  ten times as long) to be found.
"""

from __future__ import annotations

import gc

from moot.pricing import load_table

FULL_COLLECTION_AFTER = 100  # collections of the middle generation between full ones (Python's default: 10)


def settle_heap() -> None:
    """Called once a server or worker has started, before it serves."""
    load_table()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
