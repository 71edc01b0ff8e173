"""Runs sharing a process (the scheduler's) freeze long-lived objects once and unfreeze them when
the last ends (etl.core.run.jobs.long_lived_objects_frozen)."""

from __future__ import annotations

import gc

from etl.core.run.jobs import long_lived_objects_frozen


def test_the_last_run_to_end_unfreezes_and_only_the_first_collects() -> None:
    gc.unfreeze()
    with long_lived_objects_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        collections = gc.get_stats()[2]["collections"]
        with long_lived_objects_frozen():  # a second run of the same process starts ...
            assert gc.get_stats()[2]["collections"] == collections, "no full collection at its start"
        assert gc.get_freeze_count() >= frozen, "... and its end leaves the first run's objects frozen"
    assert gc.get_freeze_count() == 0
