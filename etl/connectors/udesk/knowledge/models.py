"""Mirror tables for Udesk knowledge (seed 001) and KM robot entities (seed 002).

These lists have no updated-since filter, so every sync lists them whole and the content hash
decides what changed. Keys are (connection, id): ids are unique within an account. `agent_id`
is the owner the record was listed under (0 = administrator). Catalogs, questions, useful
expressions and links and KM entities take new rows (write-back creates, `InsertableRecord`),
entity values too (a new value: a row with a negative value_id).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from etl.core.mirror.base import Base, InsertableRecord, MirroredRecord, meta

BigId = sa.BigInteger


class KnowledgeCatalog(InsertableRecord, Base):
    """Catalogs of the four knowledge types as a tree (parent_id 0 = top level, depth 1..4)."""

    __tablename__ = "udesk_knowledge_catalogs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    knowledge_type: Mapped[str] = mapped_column(sa.String(32), info=meta())
    agent_id: Mapped[int] = mapped_column(BigId, server_default="0", info=meta())
    parent_id: Mapped[int | None] = mapped_column(BigId)
    name: Mapped[str | None] = mapped_column(sa.Text)
    depth: Mapped[int] = mapped_column(server_default="0", info=meta())  # 0 until a new row is created
    path: Mapped[str] = mapped_column(sa.Text, server_default="", info=meta())  # "Top / Child / Grandchild"


class KnowledgeQuestion(InsertableRecord, Base):
    __tablename__ = "udesk_knowledge_questions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    agent_id: Mapped[int] = mapped_column(BigId, server_default="0", info=meta())
    catalog_id: Mapped[int | None] = mapped_column(BigId)
    title: Mapped[str | None] = mapped_column(sa.Text)
    content: Mapped[str | None] = mapped_column(sa.Text)
    content_type: Mapped[str | None] = mapped_column(sa.String(16))
    lasts: Mapped[bool | None]
    last_min: Mapped[str | None] = mapped_column(sa.String(32))  # as sent: "2018-03-31" or a date-time
    last_max: Mapped[str | None] = mapped_column(sa.String(32))
    updated_at: Mapped[Any | None] = mapped_column(sa.DateTime(timezone=True))


class UsefulExpression(InsertableRecord, Base):
    __tablename__ = "udesk_useful_expressions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    agent_id: Mapped[int] = mapped_column(BigId, server_default="0", info=meta())
    catalog_id: Mapped[int | None] = mapped_column(BigId)
    content: Mapped[str | None] = mapped_column(sa.Text)


class UsefulLink(InsertableRecord, Base):
    __tablename__ = "udesk_useful_links"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    agent_id: Mapped[int] = mapped_column(BigId, server_default="0", info=meta())
    catalog_id: Mapped[int | None] = mapped_column(BigId)
    name: Mapped[str | None] = mapped_column(sa.Text)
    url: Mapped[str | None] = mapped_column(sa.Text)


class KnowledgeAttachment(MirroredRecord, Base):
    """Metadata; the file itself is downloaded only when the connection asks (local_path)."""

    __tablename__ = "udesk_knowledge_attachments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    agent_id: Mapped[int] = mapped_column(BigId, server_default="0", info=meta())
    catalog_id: Mapped[int | None] = mapped_column(BigId)
    file_name: Mapped[str | None] = mapped_column(sa.Text)
    file_type: Mapped[str | None] = mapped_column(sa.Text)
    file_size: Mapped[int | None] = mapped_column(BigId)  # sent as a number, a string or null
    file_url: Mapped[str | None] = mapped_column(sa.Text)
    local_path: Mapped[str | None] = mapped_column(sa.Text, info=meta())


class KmEntity(InsertableRecord, Base):
    __tablename__ = "udesk_km_entities"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    robot_id: Mapped[int | None] = mapped_column(BigId, info={"src": "robotId"})
    name: Mapped[str | None] = mapped_column(sa.Text)
    api_name: Mapped[str | None] = mapped_column(sa.Text, info={"src": "apiName"})
    type: Mapped[int | None]
    status: Mapped[int | None]
    regex: Mapped[str | None] = mapped_column(sa.Text)
    sys_entity_identifier: Mapped[str | None] = mapped_column(sa.Text, info={"src": "sysEntityIdentifier"})
    remark: Mapped[str | None] = mapped_column(sa.Text)
    orders: Mapped[int | None]


class KmEntityValue(Base):
    """One value of an entity's valueList, with its synonyms (similarValueList)."""

    __tablename__ = "udesk_km_entity_values"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    entity_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    value_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    original_value: Mapped[str | None] = mapped_column(sa.Text)
    synonyms: Mapped[list[Any]] = mapped_column(server_default=sa.text("'[]'"))
    # its entity was deleted remotely (TableWriter.mark_deleted flags the child rows of a vanished
    # record that have this column); a value deleted alone is simply no longer listed
    is_deleted: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
