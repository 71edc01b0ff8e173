"""Declarative base and the columns every mirrored table shares."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSON on SQLite, JSONB on PostgreSQL (indexable, queryable by reporting jobs)
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType, datetime: Timestamp}


def meta(**info: Any) -> dict[str, Any]:
    return {"meta": True, **info}


class MirroredRecord:
    """Sync metadata kept beside every mirrored record.

    `raw` is the record as received (secrets removed); `content_hash` is a hash of it, used to
    skip unchanged records and to detect changes in lists that have no updated-since filter.
    """

    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True, info=meta())
    raw: Mapped[dict[str, Any]] = mapped_column(info=meta())
    content_hash: Mapped[str] = mapped_column(sa.String(32), info=meta())
    first_seen_at: Mapped[datetime] = mapped_column(info=meta())
    last_seen_at: Mapped[datetime] = mapped_column(info=meta())
    remote_updated_at: Mapped[datetime | None] = mapped_column(info=meta())
    is_deleted: Mapped[bool] = mapped_column(default=False, info=meta())
    deleted_at: Mapped[datetime | None] = mapped_column(info=meta())
    last_run_id: Mapped[int | None] = mapped_column(info=meta())


class InsertableRecord(MirroredRecord):
    """A mirrored table that takes new rows from users (write-back creates).

    The server defaults let a plain `INSERT` give only a (negative, temporary) id and the
    record's columns: `desksync push` creates the record remotely and puts the real one in place.
    """

    raw: Mapped[dict[str, Any]] = mapped_column(server_default=sa.text("'{}'"), info=meta())
    content_hash: Mapped[str] = mapped_column(sa.String(32), server_default="", info=meta())
    first_seen_at: Mapped[datetime] = mapped_column(server_default=sa.func.current_timestamp(), info=meta())
    last_seen_at: Mapped[datetime] = mapped_column(server_default=sa.func.current_timestamp(), info=meta())
    is_deleted: Mapped[bool] = mapped_column(default=False, server_default=sa.false(), info=meta())


def display_of(source: str) -> dict[str, Any]:
    """Column info for the display text of a multi-language column."""
    return {"display_of": source}


def src(key: str) -> dict[str, Any]:
    """Column info when the API member has another name than the column."""
    return {"src": key}


def table_of(model: type[Any]) -> sa.Table:
    """A model's Core table (typed: SQLAlchemy annotates `__table__` as a FromClause)."""
    table = model.__table__
    assert isinstance(table, sa.Table)
    return table
