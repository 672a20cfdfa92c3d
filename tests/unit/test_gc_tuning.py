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
