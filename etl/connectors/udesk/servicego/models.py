"""ServiceGo objects as wide tables whose columns follow the objects' fields (seed 004).

ServiceGo objects are configured by each customer, so their tables cannot be written as
migrations: `servicego_<object>` is created on first sight and a field seen for the first time
(in any record's fieldDataList) becomes a column at once, on SQLite and PostgreSQL alike, through
Alembic's operations (which know each dialect's ALTER TABLE). The `servicego_fields` registry
(itself a normal migration) remembers which column holds which field, so names stay stable.

Columns per field, by fieldTypeApiName:
    <field>            fieldValue: NUMERIC for numbers and formulas, DATE for dates, a UTC
                       TIMESTAMP for date-times (minute resolution, account time zone), else TEXT
    <field>_names      optionNameList (single and multi select), JSON
    <field>_tags       tagValueList (phone, email), JSON
    <field>_name       foreignDataName (lookup)
    <field>_email      userEmail (employee lookup)
    <field>_owner      ownerResult (owner), JSON
    <field>_attachments richText.attachmentList (rich text; fieldValue holds the content), JSON
    <field>_sign       signDto (signature), JSON
`raw` keeps the whole record (id and fieldDataList) as received.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from etl.connectors.udesk.servicego.types import CARRYING, is_text, kind_of
from etl.core.mirror.base import Base, JSONType, Timestamp, table_of
from etl.core.mirror.bulk import Pack, converter
from etl.core.mirror.normalize import parse_api_date, to_str
from etl.core.mirror.rows import sqlite_timestamp_of

RESERVED = {"connection", "id", "raw", "content_hash", "first_seen_at", "last_seen_at", "remote_updated_at",
            "is_deleted", "deleted_at", "last_run_id"}


class ServiceGoField(Base):
    """Which column of `servicego_<object>` holds which field, and the type it was created with."""

    __tablename__ = "servicego_fields"
    object_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    field: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    column_name: Mapped[str] = mapped_column(sa.String(63))
    field_type: Mapped[str] = mapped_column(sa.String(64))
    added_at: Mapped[datetime]


FIELDS = table_of(ServiceGoField)


class ServiceGoRelated(Base):
    """Optional stream: a record's related records of another object (relatedDatas), as links
    plus the related record as received (for objects not mirrored themselves)."""

    __tablename__ = "servicego_related"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    parent_object: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    parent_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    object_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    record_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    record: Mapped[dict[str, Any]]
    last_run_id: Mapped[int | None]


class ServiceGoRelation(Base):
    """Optional stream: record relations (selfObjectRelationData) of a major record."""

    __tablename__ = "servicego_relations"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    object_name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    major_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    data_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    relation_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    relation_name: Mapped[str | None] = mapped_column(sa.Text)
    data_name: Mapped[str | None] = mapped_column(sa.Text)
    field_values: Mapped[dict[str, Any] | None]
    last_run_id: Mapped[int | None]

# member of a fieldDataList entry -> column suffix, per field type
EXTRAS: dict[str, tuple[str, str, Any]] = {
    "field_type_single_select": ("optionNameList", "_names", JSONType),
    "field_type_multi_select": ("optionNameList", "_names", JSONType),
    "field_type_phone": ("tagValueList", "_tags", JSONType),
    "field_type_email": ("tagValueList", "_tags", JSONType),
    "field_type_lookup": ("foreignDataName", "_name", sa.Text()),
    "field_type_lookup_user": ("userEmail", "_email", sa.Text()),
    "field_type_owner": ("ownerResult", "_owner", JSONType),
    "field_type_sign": ("signDto", "_sign", JSONType),
}


def value_type(field_type: str) -> Any:
    if field_type in ("field_type_number", "field_type_formular"):
        return sa.Numeric()
    if field_type == "field_type_date":
        return sa.Date()
    if field_type == "field_type_date_time":
        return Timestamp
    return sa.Text()


def table_name(obj: str) -> str:
    return "servicego_" + re.sub(r"[^a-z0-9_]", "_", obj.lower())[:50]


def index_name(table: str, what: str) -> str:
    """`ix_<table>_<what>`, within PostgreSQL's 63 characters: a longer one is cut and given a
    hash of the whole, so that two long names stay apart."""
    name = f"ix_{table}_{what}"
    if len(name) <= 63:
        return name
    return name[:54] + "_" + hashlib.blake2b(name.encode(), digest_size=4).hexdigest()


def snake(name: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    text = re.sub(r"[^A-Za-z0-9_]", "_", text).lower().strip("_") or "field"
    if text[0].isdigit():
        text = "f_" + text
    return text[:40]


@dataclass(frozen=True)
class FieldColumn:
    field: str
    field_type: str
    column: str

    def columns(self) -> list[sa.Column[Any]]:
        out: list[sa.Column[Any]] = [sa.Column(self.column, value_type(self.field_type))]
        if self.field_type == "field_type_rich_text":
            out.append(sa.Column(self.column + "_attachments", JSONType))
        elif self.field_type in EXTRAS:
            _, suffix, kind = EXTRAS[self.field_type]
            out.append(sa.Column(self.column + suffix, kind))
        return out


def _base_columns() -> list[sa.Column[Any]]:
    # Defaults let a user INSERT a new record with only a (negative, temporary) id and its
    # fields: `desksync push` creates it remotely and puts the real id in its place.
    now = sa.func.current_timestamp()
    return [
        sa.Column("connection", sa.String(64), primary_key=True),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("raw", JSONType, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("content_hash", sa.String(32), nullable=False, server_default=""),
        sa.Column("first_seen_at", Timestamp, nullable=False, server_default=now),
        sa.Column("last_seen_at", Timestamp, nullable=False, server_default=now),
        sa.Column("remote_updated_at", Timestamp),
        sa.Column("is_deleted", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
        sa.Column("deleted_at", Timestamp),
        sa.Column("last_run_id", sa.Integer),
    ]


class ObjectSchema:
    """The registry's view of one object; `ensure` grows the table to cover new fields."""

    def __init__(self, obj: str) -> None:
        self.obj = obj
        self.fields: dict[str, FieldColumn] = {}
        self.table = self._build()

    def _build(self) -> sa.Table:
        columns = _base_columns()
        for f in self.fields.values():
            columns.extend(f.columns())
        name = table_name(self.obj)
        # Covers what every scan asks after its pages: the live rows' count (compared with the
        # remote total) and the live rows a full scan did not see. Without it both read the
        # whole wide table: 0.2 s each for 60,000 rows on SQLite.
        indexes = [sa.Index(index_name(name, "live"), "connection", "is_deleted", "last_seen_at")]
        created = self.fields.get("createTime")
        if created is not None:
            # the deletion search counts live rows by createTime ranges (servicego_deletes): a
            # range of 60,000 cases took 0.62 s through an index without is_deleted, 7 ms with it
            indexes.append(sa.Index(index_name(name, f"{created.column}_live"), "connection", "is_deleted",
                                    created.column))
        return sa.Table(name, sa.MetaData(), *columns, *indexes)

    def _ensure_indexes(self, conn: sa.Connection) -> None:
        """Create the table's indexes that are missing (tables made by older versions lack some)."""
        for index in self.table.indexes:
            index.create(conn, checkfirst=True)
        created = self.fields.get("createTime")
        if created is not None:  # superseded by the live rows' createTime index (named as it was made)
            conn.execute(sa.text(f"DROP INDEX IF EXISTS ix_{self.table.name}_{created.column}"))

    def load(self, conn: sa.Connection) -> None:
        rows = conn.execute(sa.select(FIELDS).where(FIELDS.c.object_name == self.obj)).mappings()
        self.fields = {r["field"]: FieldColumn(r["field"], r["field_type"], r["column_name"]) for r in rows}
        self.table = self._build()

    def ensure(self, conn: sa.Connection, seen: dict[str, str]) -> list[str]:
        """Create the table and add columns for fields not seen before; returns the new fields.

        Accounts of one system share the object's table (rows carry their connection), so two
        may reach here at once: on PostgreSQL the object's schema changes take a transaction-level
        advisory lock; in one process `SCHEMA_LOCK` serialises them; elsewhere the caller retries
        a change that lost the race (etl.connectors.udesk.servicego.pull.ObjectSync.probe).
        """
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": schema_lock_key(self.obj)})
        self.load(conn)
        self.table.create(conn, checkfirst=True)
        self._ensure_indexes(conn)
        new = [(name, kind) for name, kind in seen.items() if name not in self.fields]
        taken = {c.name for c in self.table.columns} | RESERVED
        # Alembic only where a column is added: a run does not import it (see etl.core.mirror.db)
        from alembic.migration import MigrationContext
        from alembic.operations import Operations

        ops = Operations(MigrationContext.configure(conn))
        now = datetime.now(UTC)
        # a field registered as plain text whose entries now carry a sub-object (an employee
        # field whose first entries were empty, under a type name we could not read)
        for name, kind in seen.items():
            known = self.fields.get(name)
            if known is None or not is_text(known.field_type) or kind not in CARRYING:
                continue
            spec = FieldColumn(name, kind, known.column)
            for col in spec.columns()[1:]:
                if col.name in taken:
                    break
                ops.add_column(self.table.name, col)
                taken.add(col.name)
            else:
                conn.execute(FIELDS.update().where(FIELDS.c.object_name == self.obj, FIELDS.c.field == name)
                             .values(field_type=kind))
                self.fields[name] = spec
                new.append((name, kind))
        if not new:
            self.table = self._build()
            return []
        for name, kind in new:
            if name in self.fields:
                continue  # given its sub-object's column above
            column = base = snake(name)
            n = 2
            while any(c in taken for c in (column, *(x.name for x in FieldColumn(name, kind, column).columns()))):
                column, n = f"{base}_{n}", n + 1
            spec = FieldColumn(name, kind, column)
            for col in spec.columns():
                ops.add_column(self.table.name, col)
                taken.add(col.name)
            conn.execute(FIELDS.insert().values(object_name=self.obj, field=name, column_name=column, field_type=kind,
                                                added_at=now))
            self.fields[name] = spec
        self.table = self._build()
        self._ensure_indexes(conn)
        return [name for name, _ in new]


# held around a schema change and its commit by every thread of a process (see ObjectSchema.ensure)
SCHEMA_LOCK = threading.RLock()


def schema_lock_key(obj: str) -> int:
    """A stable signed 64-bit key for the object's schema changes (pg_advisory_xact_lock)."""
    digest = hashlib.blake2b(f"desksync:servicego_schema:{obj}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def fields_of(record: dict[str, Any]) -> dict[str, str]:
    """The record's fields and the kind of each (etl.connectors.udesk.servicego.types: whatever its type is called)."""
    return {e["fieldApiName"]: kind_of(e["fieldApiName"], str(e.get("fieldTypeApiName") or ""), e)
            for e in record.get("fieldDataList") or [] if isinstance(e, dict) and e.get("fieldApiName")}


def _number(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    return date.fromisoformat(str(value)[:10])


def _text(value: Any) -> Any:
    return to_str(value) if value != "" else None


def _then(first: Callable[[Any], Any], to_db: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """`first`, then the driver's conversion of a value that is not None."""
    if to_db is None:
        return first

    def both(value: Any) -> Any:
        converted = first(value)
        return None if converted is None else to_db(converted)

    return both


class RecordBuilder:
    """Column values of one ServiceGo record for the object's current table."""

    updated_column: str | None

    def __init__(self, schema: ObjectSchema, tz: tzinfo) -> None:
        def minute(value: Any) -> datetime | None:
            return parse_api_date(value, tz)

        converters: dict[str, Callable[[Any], Any]] = {
            "field_type_number": _number, "field_type_formular": _number, "field_type_date": _date,
            "field_type_date_time": minute,
        }
        self.table = schema.table
        self.tz = tz
        self.empty = {c.name: None for c in schema.table.columns if c.name not in RESERVED}
        # the columns a row holds, in the order `build` gives them (its fields', then id)
        self.names = (*self.empty, "id")
        self.plan: dict[Any, tuple[str, Callable[[Any], Any] | None, str | None, str | None]] = {}
        for f in schema.fields.values():
            member, extra = None, None
            if f.field_type == "field_type_rich_text":
                member, extra = "richText", f.column + "_attachments"
            elif f.field_type in EXTRAS:
                member, suffix, _ = EXTRAS[f.field_type]
                extra = f.column + suffix
            self.plan[f.field] = (f.column, converters.get(f.field_type), member, extra)
        update = schema.fields.get("updateTime")
        self.updated_column = update.column if update else None
        self._packers: dict[str, Pack] = {}

    def build(self, record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        row: dict[str, Any] = dict(self.empty)
        row["id"] = record["id"]
        problems: list[str] = []
        plan = self.plan
        for entry in record.get("fieldDataList") or ():
            if not isinstance(entry, dict):
                problems.append(f"fieldDataList: not an object: {str(entry)[:40]}")
                continue
            spec = plan.get(entry.get("fieldApiName"))
            if spec is None:
                continue
            column, convert, member, extra = spec
            value = entry.get("fieldValue")
            if convert is None:
                row[column] = _text(value)
            else:
                try:
                    row[column] = convert(value)
                except (ValueError, TypeError) as exc:
                    problems.append(f"{column}: {exc}")
            if extra is not None:
                row[extra] = _carried(entry, member)
        return row, problems

    def packer(self, dialect: sa.Dialect) -> Pack:
        """Record -> the values of `names` as the driver takes them, without the row dict between.

        The same values as `bulk.packer(table, names, dialect)(build(record)[0])`; it raises
        (ValueError, TypeError) where `build` would report a problem, and the caller then takes
        that slower path, which names the problem (TableWriter.pack_records).
        """
        pack = self._packers.get(dialect.name)
        if pack is not None:
            return pack
        at = {name: n for n, name in enumerate(self.names)}
        id_at, width = at["id"], len(self.names)

        def to_driver(column: str, convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
            kind = self.table.c[column].type
            if isinstance(kind, sa.DateTime) and dialect.name == "sqlite":
                return sqlite_timestamp_of(self.tz)  # text to text, no datetime between
            return _then(convert or _text, converter(kind, dialect.name))

        plan = {
            name: (at[column], to_driver(column, convert), member, -1 if extra is None else at[extra],
                   converter(self.table.c[extra].type, dialect.name) if extra is not None else None)
            for name, (column, convert, member, extra) in self.plan.items()
        }
        get_spec = plan.get

        def pack_record(record: Any) -> tuple[Any, ...]:
            values: list[Any] = [None] * width
            values[id_at] = record["id"]
            for entry in record.get("fieldDataList") or ():
                if type(entry) is not dict:
                    raise TypeError("a fieldDataList entry is not an object")
                spec = get_spec(entry.get("fieldApiName"))
                if spec is None:
                    continue
                column_at, convert, member, extra_at, extra_to_db = spec
                values[column_at] = convert(entry.get("fieldValue"))
                if extra_at >= 0:
                    carried = _carried(entry, member)
                    values[extra_at] = carried if carried is None or extra_to_db is None else extra_to_db(carried)
            return tuple(values)

        self._packers[dialect.name] = pack_record
        return pack_record


def _carried(entry: dict[str, Any], member: str | None) -> Any:
    """What a field type carries besides fieldValue (options, tags, lookup names...)."""
    carried = entry.get(member)  # type: ignore[arg-type]
    if member == "richText":
        return carried.get("attachmentList") if isinstance(carried, dict) else None
    return carried
