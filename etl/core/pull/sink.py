"""Where a scan's fetched pages go: written by this process, or by the run's writer process.

A scan hands batches of pages to a `PageSink` and hears back once each batch is committed; it
does not know which kind it has. The choice is made here only: the writer process takes the
scan when the run has one and the scan is long (RunContext.writer_process); otherwise this
process writes each batch in a transaction of its own. Either way the same `Apply` function,
made by the scan's factory from its spec, writes a batch and the scan position after it.

Pages bound for a writer process can travel pickled one by one (`encode`, in the fetch threads,
while their objects are fresh in the core's cache); `decode` gives them back on the other side.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from etl.core.mirror.packing import Packed
from etl.core.pull.context import RunContext
from etl.core.pull.writer_process import Answered
from etl.core.pull.writer_serve import Apply, pickled


def _same(packed: Packed) -> Packed | bytes:
    return packed


def decode(records: Packed | bytes) -> Packed:
    """A page's records as `PageSink.encode` sent them."""
    return records if isinstance(records, Packed) else pickle.loads(records)  # noqa: S301 - our own writer's pipe


@dataclass(frozen=True)
class PageSink:
    submit: Callable[[list[Any], Answered], None]  # a batch of pages; the callback gets what was written
    batch_pages: int  # pages to a batch
    least_pages: int  # a batch waits for this many pages unless fetching is slow (etl.core.pool)
    encode: Callable[[Packed], Packed | bytes] = _same
    in_process: bool = True


@contextlib.contextmanager
def page_sink(ctx: RunContext, factory: Callable[[Any], Apply], spec: Any, pages: int, *,
              in_process_batch: int, process_batch: int, log: Any) -> Iterator[PageSink]:
    """The sink for a scan of `pages` pages; `factory(spec)` writes its batches; `log` is the scan's.

    In-process, a batch is a transaction. A writer process takes batches of a sixteenth of the
    scan at most (`process_batch` pages), and waits for a whole one unless fetching is slow:
    its transactions take several (etl.core.tuning).
    """
    writer = ctx.writer_process(pages)
    if writer is None:
        apply = factory(spec)

        def write_here(batch: list[Any], answered: Answered) -> None:
            with ctx.engine.begin() as conn:
                written = apply(conn, batch)
            answered(written)

        yield PageSink(write_here, in_process_batch, 1)
        return
    log.info("scan_through_writer_process", pages=pages)
    size = min(process_batch, max(1, pages // 16))
    with writer.scan(factory, spec, ctx.mirror_url):
        yield PageSink(writer.submit, size, size, pickled, in_process=False)
