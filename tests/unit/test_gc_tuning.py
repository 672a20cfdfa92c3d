"""The run's GC setting is raised for the block only, and restored even on error."""

from __future__ import annotations

import gc

import pytest

from streams.gc_tuning import RUN_GEN0_THRESHOLD, fewer_collections


def test_the_threshold_is_raised_inside_and_restored_after_an_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        assert gc.get_threshold() == (max(before[0], RUN_GEN0_THRESHOLD), *before[1:])
        raise RuntimeError("mid-run")
    assert gc.get_threshold() == before


def test_blocks_that_overlap_without_nesting_restore_the_threshold_once_all_have_left() -> None:
    """Two threads' blocks (an ingest and a run, embedded in threads) may end in either order."""
    before = gc.get_threshold()
    raised = (max(before[0], RUN_GEN0_THRESHOLD), *before[1:])
    ingest, run = fewer_collections(), fewer_collections()
    ingest.__enter__()
    run.__enter__()
    ingest.__exit__(None, None, None)  # the first one in leaves first
    assert gc.get_threshold() == raised, "the run still going keeps its setting"
    run.__exit__(None, None, None)
    assert gc.get_threshold() == before, "nothing stays raised once both are done"
