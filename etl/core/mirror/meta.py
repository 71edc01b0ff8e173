"""Engine-wide tables: sync state (cursors), runs, the change log, pending child work, blocks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from etl.core.mirror.base import Base


class SyncState(Base):
    """One row per (connection, stream): the cursor, an interrupted scan's plan, the last outcome.

    `state` is written in the same transaction as the rows it covers, so a killed run resumes
    exactly where its last commit left it.
    """

    __tablename__ = "sync_state"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    state: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_error_at: Mapped[datetime | None]


class SyncRun(Base):
    """The run history: every sync, by hand or by a scheduled job (`job`, with the process that ran it)."""

    __tablename__ = "sync_runs"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    connection: Mapped[str] = mapped_column(sa.String(64), index=True)
    job: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    host: Mapped[str | None] = mapped_column(sa.String(255))
    pid: Mapped[int | None]
    records_read: Mapped[int] = mapped_column(default=0)
    kind: Mapped[str] = mapped_column(sa.String(16))  # sync | reconcile
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(sa.String(16))  # running | ok | failed | interrupted
    streams: Mapped[list[Any]]
    requests: Mapped[int] = mapped_column(default=0)
    rate_limit_wait_seconds: Mapped[float] = mapped_column(default=0.0)
    rows_inserted: Mapped[int] = mapped_column(default=0)
    rows_updated: Mapped[int] = mapped_column(default=0)
    rows_deleted: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    task_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)  # the Celery task that ran it


class JobTask(Base):
    """A scheduled job sent to the workers (the `[executor]`): queued by the scheduler, taken by a
    worker (which one, how many deliveries), and how it ended (etl.core.run.tasks)."""

    __tablename__ = "job_tasks"
    task_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    job: Mapped[str] = mapped_column(sa.String(64), index=True)
    connection: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))  # queued | running | done | skipped | lost
    queued_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    host: Mapped[str | None] = mapped_column(sa.String(255))  # the worker that took it last
    pid: Mapped[int | None]
    deliveries: Mapped[int] = mapped_column(default=0)
    note: Mapped[str | None] = mapped_column(sa.Text)


class ChangeLog(Base):
    """Every insert, update and delete applied to a mirrored table, in commit order.

    Downstream jobs read it incrementally: remember the last `id` consumed.
    """

    __tablename__ = "change_log"
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(sa.String(64))
    connection: Mapped[str] = mapped_column(sa.String(64))
    record_key: Mapped[str] = mapped_column(sa.String(128))
    operation: Mapped[str] = mapped_column(sa.String(8))  # insert | update | delete
    run_id: Mapped[int | None] = mapped_column(index=True)
    changed_at: Mapped[datetime]


class PendingChildren(Base):
    """Parents whose child lists (posts, comments, notes...) must still be fetched: one entry a
    parent, its `waiting` bits naming the lists (etl.core.mirror.pending.Queue).

    Written with the parent row; a bit is cleared with its child rows: a kill between the two
    cannot lose a parent's children.

    On SQLite a table WITHOUT ROWID: the key is nearly the whole row, so one B-tree holds it
    instead of a rowid table and an index beside it (migration 0009).
    """

    __tablename__ = "sync_pending_children"
    __table_args__ = {"sqlite_with_rowid": False}
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    queue: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # the parent stream, or a ServiceGo list
    parent_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    waiting: Mapped[int]  # bit i: the queue's child list i is still to fetch


class AccountBlock(Base):
    """A rate-limit block reported by a server, so that no later process retries into it."""

    __tablename__ = "account_blocks"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    budget: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    blocked_until: Mapped[datetime]
    reason: Mapped[str] = mapped_column(sa.Text)


class AccountSends(Base):
    """An account's recent requests per budget (wall-clock times), left by the process that last
    held its lease: the next holder, on this machine or another, starts with the budget as spent."""

    __tablename__ = "account_sends"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    budget: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    sent: Mapped[list[Any]]
    holder: Mapped[str] = mapped_column(sa.String(255))  # the process that saved them (host:pid:start)
    saved_at: Mapped[datetime]


class PushLog(Base):
    """Every write attempt of `desksync push`: what was sent and what the remote answered."""

    __tablename__ = "push_log"
    __table_args__ = (sa.Index("ix_push_log_record", "connection", "table_name", "record_id"),)
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    connection: Mapped[str] = mapped_column(sa.String(64))
    table_name: Mapped[str] = mapped_column(sa.String(64))
    record_id: Mapped[int] = mapped_column(sa.BigInteger)
    operation: Mapped[str] = mapped_column(sa.String(8))  # create | update | delete
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(sa.String(8))  # ok | failed
    code: Mapped[str | None] = mapped_column(sa.String(32))
    message: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[datetime]


class PushHeld(Base):
    """Rows the remote refused: skipped by later pushes until `desksync push --retry-failed`."""

    __tablename__ = "push_held"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    table_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    record_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    operation: Mapped[str] = mapped_column(sa.String(8))
    error: Mapped[str] = mapped_column(sa.Text)
    held_at: Mapped[datetime]


class Conflict(Base):
    """A field changed locally and remotely to different values, waiting for a choice."""

    __tablename__ = "conflicts"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    connection: Mapped[str] = mapped_column(sa.String(64))
    table_name: Mapped[str] = mapped_column(sa.String(64))
    record_id: Mapped[int] = mapped_column(sa.BigInteger)
    field: Mapped[str] = mapped_column(sa.String(128))  # the column
    base: Mapped[str | None] = mapped_column(sa.Text)  # values in the API's own text form
    local: Mapped[str | None] = mapped_column(sa.Text)
    remote: Mapped[str | None] = mapped_column(sa.Text)
    detected_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    resolution: Mapped[str | None] = mapped_column(sa.String(8))  # local | remote


class PipelineLink(Base):
    """The id map: which target record a pipeline wrote for a source record, and what it sent.

    One row per (source record, target table). `target_id` is a negative placeholder until the
    target's push creates the record (the push rewrites it in the same transaction); `sent_hash`
    and `sent_values` are the mapped values last staged, so a re-run sends only what changed and
    a field edited on the target since can be told apart. A source record that cannot be mapped
    has no target and its `error`; a tree record folded into an ancestor has `folded_into`.
    """

    __tablename__ = "pipeline_links"
    source_connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    source_object: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    source_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    target_connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    target_table: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    target_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    pipeline: Mapped[str] = mapped_column(sa.String(64))
    step: Mapped[str] = mapped_column(sa.String(64))
    sent_hash: Mapped[str | None] = mapped_column(sa.String(32))
    sent_values: Mapped[dict[str, Any] | None]
    folded_into: Mapped[str | None] = mapped_column(sa.String(128))
    error: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[datetime]

    __table_args__ = (sa.Index("ix_pipeline_links_target", "target_connection", "target_table", "target_id"),)
