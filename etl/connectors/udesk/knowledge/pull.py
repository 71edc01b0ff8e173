"""Udesk knowledge lists and KM entities into the mirror (seeds 001 and 002).

None of these lists can be asked for changes since a time, so each sync lists them whole, for
every configured owner (agent_id), at the largest page size (100). The content hash decides:
unchanged records are not rewritten, changed ones are, and records no longer listed are marked
deleted. Lists are small (thousands), so a stream is read completely before it is written in one
transaction: a kill loses nothing but the reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from etl.connectors.udesk.knowledge import models as m
from etl.connectors.udesk.knowledge.client import KnowledgeClient
from etl.connectors.udesk.knowledge.diff import WRITABLE
from etl.connectors.udesk.knowledge.settings import UdeskKnowledgeConnection
from etl.core.mirror.base import Base, table_of
from etl.core.mirror.packing import ChildRows
from etl.core.mirror.rows import RowBuilder
from etl.core.mirror.write import TableWriter
from etl.core.pull.context import RunContext
from etl.core.push.columns import Texts, merger

Fetch = Callable[[KnowledgeClient, UdeskKnowledgeConnection], tuple[list[dict[str, Any]], list[dict[str, Any]]]]

LISTS = {"question": "knowledge_questions", "useful_expression": "useful_expressions",
         "useful_link": "useful_links", "attachment": "knowledge_attachments"}


@dataclass(frozen=True)
class KnowledgeStream:
    name: str
    model: type[Base]
    fetch: Fetch  # -> records and, per record, the column overrides (owner, depth...)
    children: Callable[[dict[str, Any], str], ChildRows] | None = None
    child_tables: tuple[tuple[sa.Table, str], ...] = ()


def _catalogs(client: KnowledgeClient, conn: UdeskKnowledgeConnection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records, overrides = [], []
    for knowledge_type in conn.knowledge_types:
        for agent_id in conn.agent_ids:
            for item in client.catalogs(knowledge_type, agent_id):
                records.append(item["record"])
                overrides.append({k: item[k] for k in ("knowledge_type", "agent_id", "depth", "path")})
    return records, overrides


def _listing(knowledge_type: str) -> Fetch:
    resource = LISTS[knowledge_type]

    def fetch(client: KnowledgeClient, conn: UdeskKnowledgeConnection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        records, overrides = [], []
        if knowledge_type in conn.knowledge_types:
            for agent_id in conn.agent_ids:
                for record in client.list_all(resource, agent_id):
                    records.append(record)
                    overrides.append({"agent_id": agent_id})
        return records, overrides

    return fetch


def _entities(client: KnowledgeClient, conn: UdeskKnowledgeConnection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records = [e for robot in conn.robot_ids for e in client.entities(robot)]
    return records, [{} for _ in records]


_VALUES = table_of(m.KmEntityValue)


def entity_values(record: dict[str, Any], connection: str) -> ChildRows:
    rows = {}
    for value in record.get("valueList") or []:
        if isinstance(value, dict) and value.get("id") is not None:
            # (connection, entity_id, value_id, original_value, synonyms, is_deleted)
            value_id = int(value["id"])
            rows[value_id] = (connection, record["id"], value_id, value.get("originalValue"),
                              list(value.get("similarValueList") or []), False)
    return {_VALUES: list(rows.values())}


STREAMS = (
    KnowledgeStream("catalogs", m.KnowledgeCatalog, _catalogs),
    KnowledgeStream("questions", m.KnowledgeQuestion, _listing("question")),
    KnowledgeStream("useful_expressions", m.UsefulExpression, _listing("useful_expression")),
    KnowledgeStream("useful_links", m.UsefulLink, _listing("useful_link")),
    KnowledgeStream("attachments", m.KnowledgeAttachment, _listing("attachment")),
    KnowledgeStream("km_entities", m.KmEntity, _entities, entity_values, ((_VALUES, "entity_id"),)),
)


def select_streams(requested: tuple[str, ...], conn: UdeskKnowledgeConnection) -> list[KnowledgeStream]:
    known = {s.name: s for s in STREAMS}
    unknown = [n for n in requested if n not in known]
    if unknown:
        raise ValueError(f"unknown stream {unknown[0]!r} (known: {', '.join(known)})")
    chosen = [s for s in STREAMS if not requested or s.name in requested]
    return [s for s in chosen if s.name != "km_entities" or conn.robot_ids]


def knowledge_writer(stream: KnowledgeStream, settings: UdeskKnowledgeConnection, connection: str, tz: tzinfo,
                     sent: Mapping[Any, Texts] | None = None) -> TableWriter:
    """The writer of a knowledge table; with write-back configured, a pull keeps local edits. A
    push writing back the remote's answers gives the values it sent (`sent`, see
    etl.core.push.columns.merger)."""
    table = table_of(stream.model)
    builder = RowBuilder(table, tz, "en")
    push = settings.push.get(stream.name)
    merge = None
    if push is not None:
        merge = merger(WRITABLE[stream.name], connection, builder, tz, push.conflict_policy, sent)
    return TableWriter(table, builder, connection, children=stream.children, child_tables=stream.child_tables,
                       merge=merge)


def refresh_paths(conn: sa.Connection, connection: str, overrides: list[dict[str, Any]], ids: list[int]) -> None:
    """Catalog depth and path come from the tree, not the record: renaming or moving a catalog
    changes its descendants' paths while their records (and content hashes) stay the same."""
    table = table_of(m.KnowledgeCatalog)
    wanted = {i: (o["depth"], o["path"]) for i, o in zip(ids, overrides, strict=True)}
    stale = [{"k_id": i, "depth": wanted[i][0], "path": wanted[i][1]} for i, depth, path in conn.execute(
        sa.select(table.c.id, table.c.depth, table.c.path).where(table.c.connection == connection))
        if i in wanted and wanted[i] != (depth, path)]
    if stale:
        conn.execute(table.update().where(table.c.connection == connection, table.c.id == sa.bindparam("k_id"))
                     .values(depth=sa.bindparam("depth"), path=sa.bindparam("path")), stale)


def run_stream(ctx: RunContext, stream: KnowledgeStream) -> None:
    settings: UdeskKnowledgeConnection = ctx.settings  # type: ignore[assignment]
    client: KnowledgeClient = ctx.client  # type: ignore[assignment]
    records, overrides = stream.fetch(client, settings)
    table = table_of(stream.model)
    writer = knowledge_writer(stream, settings, ctx.connection, ctx.tz)
    with ctx.engine.begin() as conn:
        result = writer.upsert(conn, records, ctx.run_id, overrides=overrides)
        if stream.name == "catalogs":
            refresh_paths(conn, ctx.connection, overrides, [int(r["id"]) for r in records])
        vanished = writer.live_ids(conn) - set(result.seen_ids)
        deleted = writer.mark_deleted(conn, sorted(vanished), ctx.run_id, guard=ctx.delete_guard)
        if stream.name == "attachments" and settings.download_attachments and result.changed_ids:
            _download(ctx, client, settings, conn, table, [r for r in records if r["id"] in set(result.changed_ids)])
    ctx.stats.add(result.stats)
    ctx.stats.deleted += deleted
    ctx.report(stream.name, len(records), len(records))


def _download(ctx: RunContext, client: KnowledgeClient, settings: UdeskKnowledgeConnection, conn: sa.Connection,
              table: sa.Table, records: list[dict[str, Any]]) -> None:
    """Fetch changed attachments' files (up to the size cap) into attachments_dir/<connection>/."""
    folder = Path(settings.attachments_dir)
    if not folder.is_absolute():
        folder = ctx.base_dir / folder
    folder = folder / ctx.connection
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        url = record.get("file_url")
        if not url:
            continue
        content = client.download(str(url), settings.max_attachment_bytes)
        if content is None:
            ctx.log.warning("attachment_too_large", id=record["id"], limit=settings.max_attachment_bytes)
            continue
        name = re.sub(r"[^\w.\-]", "_", str(record.get("file_name") or "file"))[:120]
        target = folder / f"{record['id']}-{name}"
        target.write_bytes(content)
        conn.execute(table.update().where(table.c.connection == ctx.connection, table.c.id == record["id"])
                     .values(local_path=str(target)))
