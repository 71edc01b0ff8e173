"""EddyDesk streams (seed 003): which endpoint fills which table, and how it is followed.

Three kinds:
- windowed: incremental on date_updated (tickets, users, organizations, knowledge base);
- full: small lists fetched whole every run and compared by content hash (reference lists,
  custom fields); what disappeared is marked deleted;
- child: lists under a parent (posts, comments, notes, options, audit, billing), fetched whole
  for each parent that changed; what disappeared under that parent is marked deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from etl.connectors.eddydesk import models as m
from etl.core.mirror.base import Base, table_of
from etl.core.mirror.normalize import to_int, to_str
from etl.core.mirror.packing import ChildRows
from etl.core.mirror.pending import Queue

Kind = Literal["windowed", "full", "child"]


@dataclass(frozen=True)
class Variant:
    """One filtered view of a windowed list, with its own cursor (tickets: active and deleted)."""

    suffix: str
    params: dict[str, Any]
    marks_deleted: bool = False


@dataclass(frozen=True)
class Stream:
    name: str
    kind: Kind
    path: str  # "{parent_id}" is filled in for child streams
    model: type[Base]
    variants: tuple[Variant, ...] = (Variant("", {}),)
    scope: dict[str, Any] = field(default_factory=dict)  # constant key columns
    # child streams fetched for each changed record; their order gives their bits in the
    # children queue (sync_pending_children), so new ones go at the end
    children: tuple[str, ...] = ()
    parent: str | None = None  # child stream: the parent stream
    parent_column: str | None = None  # child stream: column holding the parent id
    parent_query: Callable[[str], sa.Select[Any]] | None = None  # child stream refreshed for all these parents
    get_path: str | None = None  # single-record endpoint, for reconciliation checks
    secret_keys: tuple[str, ...] = ()
    child_rows: Callable[[dict[str, Any], str], ChildRows] | None = None
    child_tables: tuple[tuple[sa.Table, str], ...] = ()
    optional: bool = False
    # child list that is a history: read from its newest mirrored entry on (date_created filter),
    # and an entry missing from what was read is not gone
    history_since: str | None = None

    @property
    def table(self) -> sa.Table:
        return table_of(self.model)


# --- child rows (tuples in their table's column order, see ChildRows) ------------------------------

def _custom_values(record: dict[str, Any], connection: str) -> list[tuple[Any, ...]]:
    """(connection, parent id, field_id, field_type, value_text, value): one row per field id."""
    out: dict[int, tuple[Any, ...]] = {}
    parent_id = record["id"]
    for cf in record.get("custom_fields") or []:
        if not isinstance(cf, dict) or cf.get("id") is None:
            continue
        field_id = int(cf["id"])
        value = cf.get("field_value")
        out[field_id] = (connection, parent_id, field_id, cf.get("field_type"), to_str(value), value)
    return list(out.values())


_TICKET_CF = table_of(m.TicketCustomFieldValue)
_TICKET_TAGS = table_of(m.TicketTag)
_TICKET_PEOPLE = table_of(m.TicketParticipant)


def ticket_children(record: dict[str, Any], connection: str) -> ChildRows:
    ticket_id = record["id"]
    # participants: (connection, ticket_id, role, position, email, user_id)
    people: list[tuple[Any, ...]] = [(connection, ticket_id, role, i, to_str(value), None)
              for role in ("cc", "bcc") for i, value in enumerate(record.get(role) or [])]
    people += [(connection, ticket_id, "follower", i, None, to_int(value))
               for i, value in enumerate(record.get("followers") or [])]
    return {
        _TICKET_CF: _custom_values(record, connection),
        _TICKET_TAGS: [(connection, ticket_id, i, str(tag)) for i, tag in enumerate(record.get("tags") or [])],
        _TICKET_PEOPLE: people,
    }


def user_children(record: dict[str, Any], connection: str) -> ChildRows:
    departments = {to_int(d) for d in record.get("department") or [] if to_int(d) is not None}
    return {
        table_of(m.UserDepartment): [(connection, record["id"], d) for d in sorted(departments)],  # type: ignore[type-var]
        table_of(m.UserCustomFieldValue): _custom_values(record, connection),
    }


def organization_children(record: dict[str, Any], connection: str) -> ChildRows:
    members = {
        (role, to_int(uid))
        for role, key in (("employee", "employees"), ("manager", "managers"))
        for uid in record.get(key) or []
    }
    return {
        table_of(m.OrganizationMember): [
            (connection, record["id"], role, uid)
            for role, uid in sorted(members, key=lambda x: (x[0], x[1] or 0))
            if uid is not None
        ],
        table_of(m.OrganizationCustomFieldValue): _custom_values(record, connection),
    }


def article_children(record: dict[str, Any], connection: str) -> ChildRows:
    seen: dict[int, int] = {}
    for i, category in enumerate(record.get("categories") or []):
        cid = to_int(category)
        if cid is not None and cid not in seen:
            seen[cid] = i
    return {table_of(m.KbArticleCategory): [(connection, record["id"], cid, pos) for cid, pos in seen.items()]}


def _select_fields_of(scope: str) -> Callable[[str], sa.Select[Any]]:
    """Option lists exist only for select and hierarchy fields (seed 003, "Attention")."""
    t = table_of(m.CustomField)

    def query(connection: str) -> sa.Select[Any]:
        return sa.select(t.c.id).where(
            t.c.connection == connection,
            t.c.scope == scope,
            t.c.field_type.in_(("select", "hierarchy")),
            t.c.is_deleted.is_(False),
        )

    return query


# --- the catalogue --------------------------------------------------------------------------------

_ACTIVE_AND_DELETED = (Variant("", {"deleted": 0}), Variant("deleted", {"deleted": 1}, marks_deleted=True))


def _reference(name: str, path: str, model: type[Base]) -> Stream:
    return Stream(name, "full", path, model)


def _fields(scope: str, path: str) -> tuple[Stream, Stream]:
    fields = Stream(f"{scope}_custom_fields", "full", path, m.CustomField, scope={"scope": scope})
    options = Stream(
        f"{scope}_custom_field_options",
        "child",
        path + "{parent_id}/options/",
        m.CustomFieldOption,
        scope={"scope": scope},
        parent=fields.name,
        parent_column="field_id",
        parent_query=_select_fields_of(scope),
    )
    return fields, options


STREAMS: tuple[Stream, ...] = (
    _reference("departments", "departments/", m.Department),
    _reference("statuses", "statuses/", m.TicketStatus),
    _reference("priorities", "priorities/", m.Priority),
    _reference("types", "types/", m.TicketType),
    _reference("groups", "groups/", m.Group),
    _reference("user_statuses", "user_statuses/", m.UserStatus),
    *_fields("ticket", "custom_fields/"),
    *_fields("user", "users/custom_fields/"),
    *_fields("organization", "organizations/custom_fields/"),
    Stream(
        "organizations",
        "windowed",
        "organizations/",
        m.Organization,
        children=("organization_notes",),
        get_path="organizations/{id}",
        child_rows=organization_children,
        child_tables=(
            (table_of(m.OrganizationMember), "organization_id"),
            (table_of(m.OrganizationCustomFieldValue), "organization_id"),
        ),
    ),
    Stream(
        "organization_notes", "child", "organizations/{parent_id}/notes/", m.OrganizationNote,
        parent="organizations", parent_column="organization_id",
    ),
    Stream(
        "users",
        "windowed",
        "users/",
        m.User,
        children=("user_notes", "user_statuses_log"),
        get_path="users/{id}",
        secret_keys=("api_key",),
        child_rows=user_children,
        child_tables=((table_of(m.UserDepartment), "user_id"), (table_of(m.UserCustomFieldValue), "user_id")),
    ),
    Stream("user_notes", "child", "users/{parent_id}/notes/", m.UserNote, parent="users", parent_column="user_id"),
    Stream(
        "user_statuses_log", "child", "users/{parent_id}/statuses_log/", m.UserStatusChange,
        parent="users", parent_column="user_id", optional=True, history_since="from_date_created",
    ),
    Stream(
        "tickets",
        "windowed",
        "tickets/",
        m.Ticket,
        variants=_ACTIVE_AND_DELETED,
        children=("ticket_posts", "ticket_comments", "ticket_audit", "ticket_billing"),
        get_path="tickets/{id}",
        child_rows=ticket_children,
        child_tables=(
            (table_of(m.TicketCustomFieldValue), "ticket_id"),
            (table_of(m.TicketTag), "ticket_id"),
            (table_of(m.TicketParticipant), "ticket_id"),
        ),
    ),
    Stream("ticket_posts", "child", "tickets/{parent_id}/posts/", m.TicketPost, parent="tickets", parent_column="ticket_id"),
    Stream(
        "ticket_comments", "child", "tickets/{parent_id}/comments/", m.TicketComment,
        parent="tickets", parent_column="ticket_id",
    ),
    Stream(
        "ticket_audit", "child", "tickets/{parent_id}/audit/", m.TicketAudit,
        parent="tickets", parent_column="ticket_id", optional=True,
    ),
    Stream(
        "ticket_billing", "child", "tickets/{parent_id}/billing/", m.TicketBilling,
        parent="tickets", parent_column="ticket_id", optional=True,
    ),
    Stream("kb_categories", "windowed", "knowledge_base/categories", m.KbCategory),
    Stream(
        "kb_articles",
        "windowed",
        "knowledge_base/articles",
        m.KbArticle,
        child_rows=article_children,
        child_tables=((table_of(m.KbArticleCategory), "article_id"),),
    ),
)

BY_NAME = {s.name: s for s in STREAMS}


def children_queue(parent: Stream) -> Queue:
    """The queue of `parent`'s records waiting for their child lists."""
    return Queue(parent.name, parent.children)


def parent_queue(child: Stream) -> Queue:
    """The queue `child`'s parents wait in."""
    assert child.parent is not None, f"{child.name} is not a child stream"
    return children_queue(BY_NAME[child.parent])


def select_streams(configured: tuple[str, ...], requested: tuple[str, ...] = ()) -> list[Stream]:
    """Resolve stream names: "default" means every stream that is not optional.

    Raises ValueError naming an unknown stream.
    """
    names: list[str] = []
    for name in requested or configured:
        if name == "default":
            names.extend(s.name for s in STREAMS if not s.optional)
        elif name in BY_NAME:
            names.append(name)
        else:
            known = ", ".join(s.name for s in STREAMS)
            raise ValueError(f"unknown stream {name!r} (known: default, {known})")
    chosen = set(names)
    return [s for s in STREAMS if s.name in chosen]
