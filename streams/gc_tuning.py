"""Cyclic-GC settings for a long run that allocates millions of short-lived objects."""

from __future__ import annotations

import gc
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


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the young-generation threshold for the block, then restore it."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], RUN_GEN0_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
