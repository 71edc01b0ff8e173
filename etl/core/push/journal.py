"""What every loader records and how it sends: planned writes, the push log, rows held with an error.

A planned write is what one request will do to one row. Each attempt lands in `push_log` (what
was sent, the remote's answer, ok or the API's own code and message; creates log an `intent`
row before sending, which is how a lost answer is recognised after a crash). A row the remote
refuses is held in `push_held` until `desksync push --retry-failed`; the others go on.

Sending is the same for every system: creates one by one (each records its intent first, so a
lost answer is found again), then updates and deletes several at a time within the client's rate
limit, their results written back in batches: a kill loses at most answers to updates and
deletes, which are safe to send again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from etl.core.errors import ApiError
from etl.core.mirror.base import table_of
from etl.core.mirror.meta import PipelineLink, PushHeld, PushLog
from etl.core.pool import Emit, run_jobs

PUSH_LOG = table_of(PushLog)
HELD = table_of(PushHeld)
LINKS = table_of(PipelineLink)
Answer = TypeVar("Answer")


@dataclass
class PlannedWrite:
    table: str
    record_id: int
    operation: str  # create | update | delete
    changes: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # field, remote, local
    payload: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # cannot be sent as it is (held without a request)
    upsert_items: list[dict[str, Any]] | None = None  # a create that matches a remote record updates it
    parent_id: int | None = None  # replies and notes: their ticket

    def sent_values(self) -> dict[str, str | None]:
        """The values this write sends, by field: the base its answer is written back against."""
        return {name: local for name, _, local in self.changes}


@dataclass
class PushOutcome:
    planned: list[PlannedWrite] = field(default_factory=list)
    sent: int = 0
    ok: int = 0
    failed: int = 0
    skipped_held: int = 0
    skipped_conflicts: int = 0
    skipped_deletes: int = 0
    stale_holds: list[int] = field(default_factory=list)  # held rows with nothing left to send
    wanted: set[int] = field(default_factory=set)  # rows with something to send
    done: dict[str, int] = field(default_factory=dict)  # operation -> writes the remote took

    def succeeded(self, writes: Sequence[PlannedWrite]) -> None:
        self.ok += len(writes)
        for write in writes:
            self.done[write.operation] = self.done.get(write.operation, 0) + 1

    def consider(self, write: PlannedWrite, conflicted: set[int], held: set[int], retry_failed: bool) -> None:
        """Plan a write unless its row waits on a conflict, or was held and is not being retried."""
        self.wanted.add(write.record_id)
        if write.record_id in conflicted:
            self.skipped_conflicts += 1
        elif write.record_id in held and not retry_failed:
            self.skipped_held += 1
        else:
            self.planned.append(write)

    def finish(self, held: set[int]) -> PushOutcome:
        self.stale_holds = sorted(held - self.wanted)
        return self


def hold_unsendable(engine: sa.Engine, connection: str, outcome: PushOutcome) -> list[PlannedWrite]:
    """Hold the planned writes that cannot be sent as they are; the others, to send."""
    for write in outcome.planned:
        if write.problem:
            with engine.begin() as conn:
                hold(conn, connection, write, "local", write.problem)
            outcome.failed += 1
    return [w for w in outcome.planned if not w.problem]


def release(conn: sa.Connection, connection: str, table: str, record_ids: list[int]) -> None:
    """Held rows that no longer differ from the remote (fixed back, or taken from a pull) are done."""
    if record_ids:
        conn.execute(HELD.delete().where(HELD.c.connection == connection, HELD.c.table_name == table,
                                         HELD.c.record_id.in_(record_ids)))


def held_ids(conn: sa.Connection, connection: str, table: str) -> set[int]:
    return set(conn.execute(sa.select(HELD.c.record_id).where(HELD.c.connection == connection,
                                                               HELD.c.table_name == table)).scalars())


def hold(conn: sa.Connection, connection: str, write: PlannedWrite, code: str | None, message: str) -> None:
    key = (HELD.c.connection == connection, HELD.c.table_name == write.table, HELD.c.record_id == write.record_id)
    conn.execute(HELD.delete().where(*key))
    conn.execute(HELD.insert().values(connection=connection, table_name=write.table, record_id=write.record_id,
                                      operation=write.operation, error=f"[{code}] {message}" if code else message,
                                      held_at=datetime.now(UTC)))
    log_attempt(conn, connection, write, "failed", code, message)


def log_attempt(conn: sa.Connection, connection: str, write: PlannedWrite, status: str, code: str | None,
                message: str | None) -> None:
    conn.execute(PUSH_LOG.insert().values(connection=connection, table_name=write.table, record_id=write.record_id,
                                          operation=write.operation, payload=write.payload, status=status,
                                          code=code, message=message, at=datetime.now(UTC)))


def earlier_intents(engine: sa.Engine, connection: str, table: str, record_ids: list[int]) -> dict[int, datetime]:
    """New rows whose last create attempt has no outcome (its answer may have been lost): when the
    first of those unanswered attempts began.

    An attempt is answered once an `ok` (created, or found again) or `failed` (refused by the
    remote with a documented error, so nothing was made) follows its intent. Placeholder ids are
    the user's and are reused (`-1` in every example): an intent of an attempt that was answered
    belongs to a record created long ago, and taking it as a lost answer would adopt that record
    instead of creating the new one. Only the unanswered intents after the last answer count.
    """
    if not record_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(sa.select(PUSH_LOG.c.record_id, PUSH_LOG.c.status, PUSH_LOG.c.at).where(
            PUSH_LOG.c.connection == connection, PUSH_LOG.c.table_name == table, PUSH_LOG.c.operation == "create",
            PUSH_LOG.c.record_id.in_(record_ids)).order_by(PUSH_LOG.c.id)).all()
    out: dict[int, datetime] = {}
    for record_id, status, at in rows:
        key = int(record_id)
        if status != "intent":
            out.pop(key, None)  # answered: what came before belongs to an attempt that ended
        elif key not in out:
            if isinstance(at, str):  # SQLite without the column type's processing
                at = datetime.fromisoformat(at)
            out[key] = at if at.tzinfo else at.replace(tzinfo=UTC)
    return out


def log_done(conn: sa.Connection, connection: str, table: str, writes: Sequence[PlannedWrite]) -> None:
    """Successful writes: released from the held rows, one `ok` log row each."""
    if not writes:
        return
    conn.execute(HELD.delete().where(HELD.c.connection == connection, HELD.c.table_name == table,
                                     HELD.c.record_id.in_([w.record_id for w in writes])))
    now = datetime.now(UTC)
    conn.execute(PUSH_LOG.insert(), [
        {"connection": connection, "table_name": w.table, "record_id": w.record_id, "operation": w.operation,
         "payload": w.payload, "status": "ok", "code": None, "message": None, "at": now} for w in writes])


def send_creates(engine: sa.Engine, connection: str, outcome: PushOutcome, ready: list[PlannedWrite],
                 create: Callable[[PlannedWrite], Answer],
                 created: Callable[[sa.Connection, PlannedWrite, Answer], None]) -> None:
    """The planned creates, one at a time: `create` sends one (recording its intent first);
    `created` writes its answer back (and logs it) in the same transaction as nothing else."""
    for write in (w for w in ready if w.operation == "create"):
        outcome.sent += 1
        try:
            answer = create(write)
        except ApiError as exc:
            outcome.failed += 1
            with engine.begin() as conn:
                hold(conn, connection, write, exc.code, exc.message)
            continue
        with engine.begin() as conn:
            created(conn, write, answer)
            if "id" in write.payload:
                follow_placeholder(conn, connection, write.table, write.record_id, int(write.payload["id"]))
        outcome.succeeded([write])


def follow_placeholder(conn: sa.Connection, connection: str, table: str, placeholder: int, new_id: int) -> None:
    """A pipeline's id map follows a created record from its placeholder to its real id (with the answer's
    write-back, so that no kill can leave the map pointing at a placeholder that is gone)."""
    conn.execute(LINKS.update().where(LINKS.c.target_connection == connection, LINKS.c.target_table == table,
                                      LINKS.c.target_id == placeholder).values(target_id=new_id))


def send_concurrently(engine: sa.Engine, connection: str, table: str, outcome: PushOutcome,
                      ready: list[PlannedWrite], send_one: Callable[[PlannedWrite], Answer],
                      written: Callable[[sa.Connection, list[tuple[PlannedWrite, Answer]]], None],
                      workers: int) -> None:
    """The planned updates and deletes, `workers` at a time; per batch, one transaction writes the
    answers back (`written`), logs them and holds the refused rows with the API's error."""

    def job_for(write: PlannedWrite) -> Callable[[Emit], None]:
        def job(emit: Emit) -> None:
            try:
                emit((write, send_one(write), None))
            except ApiError as exc:
                emit((write, None, exc))

        return job

    def consume(batch: list[tuple[PlannedWrite, Any, ApiError | None]]) -> None:
        # a few set-based statements per batch: every statement costs the writer thread the GIL
        # back from the sending threads
        done = [(write, answer) for write, answer, error in batch if error is None]
        with engine.begin() as conn:
            if done:
                written(conn, done)
            log_done(conn, connection, table, [write for write, _ in done])
            for write, _, error in batch:
                if error is not None:
                    hold(conn, connection, write, error.code, error.message)
        outcome.sent += len(batch)
        outcome.succeeded([write for write, _ in done])
        outcome.failed += len(batch) - len(done)

    writes = [w for w in ready if w.operation != "create"]
    run_jobs((job_for(w) for w in writes), consume, workers=workers, stop=threading.Event(), batch_size=64)
