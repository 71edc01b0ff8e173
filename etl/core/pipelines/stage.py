"""Stage one pipeline step: source rows mapped into the target's mirror table, the id map kept.

Per source record, in one transaction with the id map:
- a record the pipeline wrote before and whose mapped values are what it last sent: nothing;
- changed since: its target row's changed columns are updated (the push sends just those);
  with conflict_policy target_wins, a field changed on the target since it was sent is kept;
- never written: an existing target row with the same `match` values is taken over, otherwise a
  new row with a negative placeholder id is inserted (the push creates it and rewrites the
  placeholder in the id map in the same transaction as its answer);
- gone from the source (deleted, or no longer in a query's result): its target row is marked
  for deletion, if the pipeline allows deletes;
- not mappable (a template error, a value the column cannot hold, a reference not on the target
  yet): held in the id map with the message, the others go on; tried again every run.
A kill before the commit stages nothing; after it, the push's own journal takes over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from etl.core.config import PipelineConfig, PipelineStep
from etl.core.errors import DesksyncError
from etl.core.mirror.base import Base, table_of
from etl.core.mirror.meta import PipelineLink
from etl.core.pipelines.mapping import Mapper, MappingError, coerce, source_row, text_of, truthy
from etl.core.pipelines.targets import Target
from etl.core.push.journal import HELD, PushOutcome

LINKS = table_of(PipelineLink)


@dataclass
class StepReport:
    step: str
    target: str  # the target's table as push names it
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0  # only_if said no, or the operation is not allowed
    held: list[tuple[str, str]] = field(default_factory=list)  # source id, why
    folded: list[tuple[str, str]] = field(default_factory=list)  # source id, the ancestor it went to
    push: PushOutcome | None = None  # the target push's outcome (not for a dry run)

    @property
    def staged(self) -> int:
        return self.created + self.updated + self.deleted


@dataclass
class IdMap:
    """The id map as one run sees it: each step's links, loaded once and kept current while staging."""

    pipeline: PipelineConfig
    targets: dict[str, Target]  # step -> its target
    dry_run: bool
    # a source mirror table the models' metadata does not hold (one made at run time), by name
    find_table: Callable[[sa.Connection, str], sa.Table | None] = lambda conn, name: None
    links: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # step -> source id -> link

    def load(self, conn: sa.Connection, step: PipelineStep) -> dict[str, dict[str, Any]]:
        if step.name not in self.links:
            rows = conn.execute(sa.select(LINKS).where(*self._key(step))).mappings()
            self.links[step.name] = {r["source_id"]: dict(r) for r in rows}
        return self.links[step.name]

    def _key(self, step: PipelineStep) -> tuple[Any, ...]:
        return (LINKS.c.source_connection == self.pipeline.source, LINKS.c.source_object == step.object,
                LINKS.c.target_connection == self.pipeline.target,
                LINKS.c.target_table == self.targets[step.name].table.name)

    def resolver(self, conn: sa.Connection) -> Any:
        steps = {s.name: s for s in self.pipeline.steps}

        def resolve(step_name: str, source_id: str, hops: int = 0) -> int | None:
            link = self.load(conn, steps[step_name]).get(source_id)
            if link is None or hops > 64:
                return None
            if link["folded_into"] is not None:
                return resolve(step_name, link["folded_into"], hops + 1)
            target_id = link["target_id"]
            if target_id is None or (target_id < 0 and not (self.dry_run or self.targets[step_name].takes_placeholders)):
                return None
            return int(target_id)

        return resolve

    def save(self, conn: sa.Connection, step: PipelineStep, pipeline_name: str, source_id: str, **values: Any) -> None:
        links = self.load(conn, step)
        current = links.get(source_id)
        now = datetime.now(UTC)
        if current is None:
            row = {"source_connection": self.pipeline.source, "source_object": step.object, "source_id": source_id,
                   "target_connection": self.pipeline.target, "target_table": self.targets[step.name].table.name,
                   "target_id": None, "pipeline": pipeline_name, "step": step.name, "sent_hash": None,
                   "sent_values": None, "folded_into": None, "error": None, "updated_at": now, **values}
            conn.execute(LINKS.insert().values(row))
            links[source_id] = row
            return
        conn.execute(LINKS.update().where(*self._key(step), LINKS.c.source_id == source_id)
                     .values(updated_at=now, **values))
        current.update(values, updated_at=now)


def _source_rows(conn: sa.Connection, pipeline: PipelineConfig, step: PipelineStep,
                 find_table: Callable[[sa.Connection, str], sa.Table | None]) -> tuple[list[dict[str, Any]], set[str]]:
    """The source rows to map, and the ids of records the source has deleted (table sources)."""
    if step.sql is not None:
        query = sa.text(step.sql)
        params = {"connection": pipeline.source} if ":connection" in step.sql else {}
        try:
            rows = [source_row(r) for r in conn.execute(query, params).mappings()]
        except sa.exc.DBAPIError as exc:
            raise DesksyncError(f"pipeline step {step.name!r}: the source query failed: {exc.orig}") from None
        return rows, set()
    name = step.source_table or ""
    table = Base.metadata.tables.get(name)
    if table is None:
        table = find_table(conn, name)
    if table is None:
        raise DesksyncError(f"pipeline step {step.name!r}: source_table {name!r} is not a mirror table")
    # typed columns: JSON ones come decoded, and a text that looks like JSON stays text
    rows = [dict(r) for r in conn.execute(sa.select(table).where(table.c.connection == pipeline.source)
                                          .order_by(table.c[step.id_column])).mappings()]
    deleted = {str(r[step.id_column]) for r in rows if r.get("is_deleted")}
    return [r for r in rows if not r.get("is_deleted")], deleted


def _depths(rows: list[dict[str, Any]], step: PipelineStep) -> dict[str, tuple[int, list[str]]]:
    """Tree steps: each record's depth (1 = top level) and its ancestors, nearest first."""
    assert step.tree is not None
    parent_of = {str(r[step.id_column]): str(r.get(step.tree.parent) or "") for r in rows}
    out = {}
    for source_id in parent_of:
        chain: list[str] = []
        parent = parent_of[source_id]
        while parent and parent != "0" and parent in parent_of and parent not in chain and len(chain) < 1000:
            chain.append(parent)
            parent = parent_of[parent]
        out[source_id] = (len(chain) + 1, chain)
    return out


def _digest(values: Mapping[str, Any]) -> str:
    texts = {name: text_of(value) for name, value in values.items()}
    return hashlib.md5(orjson.dumps(texts, option=orjson.OPT_SORT_KEYS), usedforsecurity=False).hexdigest()


def _match_key(values: Mapping[str, Any], names: tuple[str, ...], ignore_case: bool) -> tuple[str, ...] | None:
    texts = [text_of(values.get(n)) for n in names]
    if not names or any(t is None for t in texts):
        return None
    return tuple(t.casefold() if ignore_case else t for t in texts if t is not None)


class _Rows:
    """The target table's rows of the target connection: by id, and by match key (live ones)."""

    def __init__(self, conn: sa.Connection, target: Target, connection: str, step: PipelineStep) -> None:
        t = target.table
        self.conn, self.target, self.connection = conn, target, connection
        columns = sorted({target.columns[n] for n in [*step.map, *step.match] if n in target.columns})
        self.names = {c: n for n, c in target.columns.items()}
        query = sa.select(t.c.id, t.c.is_deleted, *(t.c[c] for c in columns)).where(t.c.connection == connection)
        self.by_id = {int(r["id"]): dict(r) for r in conn.execute(query).mappings()}
        self.by_key: dict[tuple[str, ...], int] = {}
        for record_id in sorted(self.by_id):
            row = self.by_id[record_id]
            if not row["is_deleted"]:
                self.remember(record_id, row, step)
        lowest = conn.execute(sa.select(sa.func.min(t.c.id)).where(t.c.connection == connection)).scalar()
        self.next_placeholder = min(int(lowest or 0), 0) - 1

    def remember(self, record_id: int, row: Mapping[str, Any], step: PipelineStep) -> None:
        values = {n: row.get(self.target.columns[n]) for n in step.match if n in self.target.columns}
        key = _match_key(values, step.match, step.match_ignore_case)
        if key is not None:
            self.by_key.setdefault(key, record_id)

    def live(self, record_id: int | None) -> dict[str, Any] | None:
        row = self.by_id.get(record_id) if record_id is not None else None
        return row if row is not None and not row["is_deleted"] else None


def stage(conn: sa.Connection, name: str, pipeline: PipelineConfig, step: PipelineStep, idmap: IdMap) -> StepReport:
    target = idmap.targets[step.name]
    target.check(step.name, list(step.map), list(step.on_create))
    report = StepReport(step.name, target.push_name)
    rows, deleted = _source_rows(conn, pipeline, step, idmap.find_table)
    links = idmap.load(conn, step)
    resolve = idmap.resolver(conn)
    mapper = Mapper(step.map, pipeline.vars, resolve)
    on_create = Mapper(step.on_create, pipeline.vars, resolve)
    only_if = Mapper({"only_if": step.only_if}, pipeline.vars, resolve) if step.only_if else None
    existing = _Rows(conn, target, pipeline.target, step)
    depths = _depths(rows, step) if step.tree is not None else {}
    if depths:  # parents before children: a child's parent lookup finds the parent staged
        rows.sort(key=lambda r: depths[str(r[step.id_column])][0])
    seen: set[str] = set()
    for row in rows:
        if step.id_column not in row:
            raise DesksyncError(f"pipeline step {step.name!r}: the source has no id column {step.id_column!r} "
                                f"(columns: {', '.join(sorted(row))})")
        source_id = str(row[step.id_column])
        seen.add(source_id)
        try:
            if only_if is not None and not truthy(str(only_if.render(row)["only_if"])):
                report.skipped += 1
                continue
            if step.tree is not None and depths[source_id][0] > step.tree.max_depth:
                depth, ancestors = depths[source_id]
                ancestor = ancestors[depth - step.tree.max_depth - 1]
                report.folded.append((source_id, ancestor))
                if links.get(source_id, {}).get("folded_into") != ancestor:
                    idmap.save(conn, step, name, source_id, folded_into=ancestor, error=None)
                continue
            values = _coerced(target, mapper.render(row))
        except MappingError as exc:
            _hold(conn, idmap, step, name, source_id, str(exc), report)
            continue
        _stage_one(conn, name, pipeline, step, idmap, existing, source_id, values, row, on_create, report)
    if "delete" in pipeline.operations:
        for source_id, link in list(links.items()):
            if source_id in deleted or (step.sql is not None and source_id not in seen):
                _stage_delete(conn, name, step, idmap, existing, source_id, link, report)
    return report


def _coerced(target: Target, values: Mapping[str, Any]) -> dict[str, Any]:
    columns = target.table.c
    return {n: v if n in target.extras else coerce(columns[target.columns[n]], n, v) for n, v in values.items()}


def _hold(conn: sa.Connection, idmap: IdMap, step: PipelineStep, name: str, source_id: str, message: str,
          report: StepReport) -> None:
    report.held.append((source_id, message))
    if idmap.load(conn, step).get(source_id, {}).get("error") != message:
        idmap.save(conn, step, name, source_id, error=message)


def _stage_one(conn: sa.Connection, name: str, pipeline: PipelineConfig, step: PipelineStep, idmap: IdMap,
               existing: _Rows, source_id: str, values: dict[str, Any], row: Mapping[str, Any], on_create: Mapper,
               report: StepReport) -> None:
    target = idmap.targets[step.name]
    t = target.table
    digest = _digest(values)
    link = idmap.load(conn, step).get(source_id)
    current_id = link["target_id"] if link else None
    current = existing.live(current_id)
    if current is None:
        key = _match_key(values, step.match, step.match_ignore_case)
        matched = existing.by_key.get(key) if key is not None else None
        if matched is not None:  # taken over: every mapped field is the source's
            current_id, current, link = matched, existing.by_id[matched], None
    if current is not None and current_id is not None:
        if link is not None and link["sent_hash"] == digest:
            report.unchanged += 1
            if link["error"] is not None or link["target_id"] != current_id:
                idmap.save(conn, step, name, source_id, target_id=current_id, error=None)
            return
        if "update" not in pipeline.operations:
            report.skipped += 1
            return
        sent = (link or {}).get("sent_values") or {}
        changes = {}
        for field_name, value in values.items():
            column = target.columns[field_name]
            now = text_of(current.get(column))
            if now == text_of(value):
                continue
            if pipeline.conflict_policy == "target_wins" and link is not None and field_name in sent and now != sent[field_name]:
                continue  # changed on the target since it was sent: the target's edit stays
            changes[column] = value
        if changes:
            conn.execute(t.update().where(t.c.connection == pipeline.target, t.c.id == current_id).values(changes))
            current.update(changes)
            # a row held by an earlier push goes again with the new values (they may be the fix)
            conn.execute(HELD.delete().where(HELD.c.connection == pipeline.target, HELD.c.table_name == t.name,
                                             HELD.c.record_id == current_id))
            report.updated += 1
        else:
            report.unchanged += 1
        idmap.save(conn, step, name, source_id, target_id=current_id, sent_hash=digest,
                   sent_values={n: text_of(v) for n, v in values.items()}, error=None)
        return
    if "create" not in pipeline.operations:
        report.skipped += 1
        return
    _stage_create(conn, name, pipeline, step, idmap, existing, source_id, values, row, on_create, report)


def _stage_create(conn: sa.Connection, name: str, pipeline: PipelineConfig, step: PipelineStep, idmap: IdMap,
                  existing: _Rows, source_id: str, values: dict[str, Any], row: Mapping[str, Any], on_create: Mapper,
                  report: StepReport) -> None:
    """A new target row with a placeholder id (the target's push creates it), and its create-only extras."""
    target = idmap.targets[step.name]
    t = target.table
    try:
        extra = _coerced(target, on_create.render(row))
    except MappingError as exc:
        _hold(conn, idmap, step, name, source_id, str(exc), report)
        return
    placeholder = existing.next_placeholder
    existing.next_placeholder -= 1
    columns = {target.columns[n]: v for n, v in {**extra, **values}.items() if n in target.columns}
    conn.execute(t.insert().values(connection=pipeline.target, id=placeholder, raw={}, content_hash="",
                                   first_seen_at=datetime.now(UTC), last_seen_at=datetime.now(UTC), is_deleted=False,
                                   **columns))
    for extra_name, write in target.extras.items():
        value = extra.get(extra_name)  # extras are create-only: `map` cannot name them
        if value is not None:
            write(conn, pipeline.target, placeholder, value)
    existing.by_id[placeholder] = {"id": placeholder, "is_deleted": False, **columns}
    existing.remember(placeholder, existing.by_id[placeholder], step)
    idmap.save(conn, step, name, source_id, target_id=placeholder, sent_hash=_digest(values),
               sent_values={n: text_of(v) for n, v in values.items()}, error=None)
    report.created += 1


def _stage_delete(conn: sa.Connection, name: str, step: PipelineStep, idmap: IdMap, existing: _Rows, source_id: str,
                  link: dict[str, Any], report: StepReport) -> None:
    target = idmap.targets[step.name]
    t = target.table
    current = existing.live(link["target_id"])
    if current is not None:
        conn.execute(t.update().where(t.c.connection == idmap.pipeline.target, t.c.id == link["target_id"])
                     .values(is_deleted=True, deleted_at=None))
        current["is_deleted"] = True
        report.deleted += 1
    if link["sent_hash"] is not None or link["error"] is not None:
        idmap.save(conn, step, name, source_id, sent_hash=None, sent_values=None, error=None)

