"""The Notes mirror table, on a metadata of its own: a connector of another package keeps its
tables outside desksync's Alembic history (the engine creates them, Connector.own_tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from etl.core.mirror.base import NAMING, InsertableRecord, JSONType, Timestamp, table_of


class NotesBase(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONType, datetime: Timestamp}


class Note(InsertableRecord, NotesBase):
    __tablename__ = "notes_notes"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    title: Mapped[str | None] = mapped_column(sa.Text)
    body: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), info={"updated": True})


NOTES = table_of(Note)
