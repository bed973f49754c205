"""The garbage collector as xds-server sets it up after its first build (gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from xds_server import gc_tuning


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    built = [{"start-up": i} for i in range(1000)]  # alive when start-up ends
    frozen = gc_tuning.tune_for_serving()
    assert frozen == gc.get_freeze_count() >= len(built)
    # A full collection no longer walks them: they are in the permanent generation.
    assert not any(o is built for o in gc.get_objects())
    assert gc.get_threshold()[0] == gc_tuning.YOUNG_THRESHOLD > 700
