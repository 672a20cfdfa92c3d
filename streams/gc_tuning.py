"""Cyclic-GC settings for a long run that allocates millions of short-lived objects."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# A run or an ingest allocates a few objects per event (records, findings, figures) that
# die young and form no cycles; with the default threshold (700) the collector ran
# thousands of times per replay and each full pass walked every project and alert: ~10%
# of a 100k-project replay. A young collection walks what is alive, and an ingest batch
# keeps its records (~3 objects each, 50k records: streams.ingest.BATCH) alive until it
# is written: the threshold is above that, or every collection would walk the batch
# again (with 20k batches at 50,000: 4.9 s of a 38 s province ingest; at 200,000:
# 0.01 s, and 2.0 -> 0.9 s of a replay; 50k batches: one collection a province ingest).
# Cycles are still collected, just less often.
RUN_GEN0_THRESHOLD = 200_000


_lock = threading.Lock()
_holders = 0  # blocks inside fewer_collections(), in any thread
_saved: tuple[int, ...] | None = None  # the threshold before the first of them


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the young-generation threshold for the block, then restore it.

    The threshold is process-wide. serve keeps ingest and the engine on one worker
    thread, but code embedding them may run them in threads whose blocks overlap
    without nesting; so the first block in raises it and the last one out restores it
    (saved by each block, an early exit would lower it under a running one and a late
    one would leave it raised for good)."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(max(_saved[0], RUN_GEN0_THRESHOLD), *_saved[1:])
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
