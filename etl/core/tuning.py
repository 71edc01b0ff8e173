"""Every performance knob of the engine, in one frozen object, each said once.

The figures behind each value are in the README (Benchmarks, and *How a sync works*), measured
on this project's reference machine; the code reads `TUNING` and says only why it needs it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    # A budget of more requests a second than this lets fetching outrun one process: long scans
    # of such a connection get a forked writer process (etl.core.pull.context.writer_process_pays).
    in_process_requests_per_second: float = 20.0

    # Pages to a transaction where the fetching process writes itself: fewer commits, the same
    # resume points (a slow fetch commits sooner: etl.core.pool's least_wait).
    in_process_batch_pages: int = 32  # EddyDesk window scans
    in_process_batch_pages_servicego: int = 4  # ServiceGo scrolls (pages of 100 wide records)

    # The writer process (etl.core.pull.writer_process).
    writer_batch_pages: int = 16  # EddyDesk pages a batch (or a sixteenth of a shorter scan)
    writer_batch_pages_servicego: int = 2  # ServiceGo pages a batch
    # Batches a writer transaction takes: the indexes on parent ids take rows in random order, so
    # every commit rewrites about all their pages, and frequent commits make writing quadratic.
    writer_transaction_batches: int = 16
    writer_unapplied: int = 2  # batches sent and not yet applied: what waits in the pipe
    writer_idle_commit_seconds: float = 0.2  # no next batch this long: the writer commits
    writer_cache_mb: int = 8  # SQLite page cache of the writer's connection
    # Of the ServiceGo pages bound for a writer on SQLite, every this many-th is sent as received
    # and parsed and packed by the writer, which evens the two processes' work out.
    writer_packs_every: int = 3

    # Rows per multi-row INSERT at most (fewer for wide tables: etl.core.mirror.bulk); sqlite3 gives
    # the GIL up around every statement, and getting it back from busy fetch threads costs.
    rows_per_statement: int = 256


TUNING = Tuning()
