"""EddyDesk tables a push may write (seed 003), and their custom-field values.

See `etl.core.push.columns` for how local changes are found and merged with a pull.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

import sqlalchemy as sa

from etl.connectors.eddydesk import models as m
from etl.core.mirror.base import Base
from etl.core.mirror.normalize import to_str
from etl.core.push.columns import CUSTOM, ChildValues, Texts, Writable, to_text


def _record_texts(record: dict[str, Any]) -> Texts:
    """The scalar custom-field values of a record (list values, hierarchies, are not pushed)."""
    out: Texts = {}
    for cf in record.get("custom_fields") or []:
        if isinstance(cf, dict) and cf.get("id") is not None and not isinstance(cf.get("field_value"), list | dict):
            out[f"{CUSTOM}{cf['id']}"] = to_text(to_str(cf.get("field_value")), UTC)
    return out


def _row_texts(rows: Sequence[sa.RowMapping]) -> Texts:
    # the user edits value_text; list values are skipped as in _record_texts
    return {f"{CUSTOM}{r['field_id']}": to_text(r["value_text"], UTC) for r in rows
            if not isinstance(r["value"], list | dict)}


def _keep(record: dict[str, Any], kept: Texts) -> None:
    """The child rows of `record` will carry the kept local values (its `raw` is already serialised)."""
    by_id = {int(name[len(CUSTOM):]): text for name, text in kept.items()}
    values = [dict(cf) for cf in record.get("custom_fields") or [] if isinstance(cf, dict)]
    present = {cf.get("id") for cf in values}
    for cf in values:
        if cf.get("id") in by_id:
            cf["field_value"] = by_id[cf["id"]]
    values += [{"id": fid, "field_type": None, "field_value": text} for fid, text in by_id.items() if fid not in present]
    record["custom_fields"] = [cf for cf in values if not (cf.get("id") in by_id and by_id[cf["id"]] is None)]


def _custom_fields(model: type[Base], parent_column: str) -> ChildValues:
    def put_back(conn: sa.Connection, table: sa.Table, connection: str, record_id: int, name: str,
                 raw: dict[str, Any]) -> None:
        field_id = int(name[len(CUSTOM):])
        conn.execute(table.delete().where(table.c.connection == connection, table.c[parent_column] == record_id,
                                          table.c.field_id == field_id))
        remote = next((cf for cf in raw.get("custom_fields") or [] if isinstance(cf, dict) and cf.get("id") == field_id),
                      None)
        if remote is not None:
            conn.execute(table.insert().values(connection=connection, **{parent_column: record_id}, field_id=field_id,
                                               field_type=remote.get("field_type"),
                                               value_text=to_str(remote.get("field_value")), value=remote.get("field_value")))

    def rows_of(table: sa.Table, name: str) -> Any:
        return table.c.field_id == int(name[len(CUSTOM):])

    return ChildValues(model, parent_column, CUSTOM, _record_texts, _row_texts, _keep, put_back, rows_of)


OPTIONS = "custom_field_options"  # ticket, user and organization field options: one table

WRITABLE = {w.stream: w for w in (
    Writable("tickets", m.Ticket,
             ("title", "status_id", "priority_id", "type_id", "department_id", "owner_id", "user_id", "ticket_lock",
              "sla_date", "freeze_date"),
             ("priority_id", "type_id", "department_id", "owner_id", "user_id"),
             _custom_fields(m.TicketCustomFieldValue, "ticket_id")),
    Writable("users", m.User,
             ("name", "lastname", "email", "phone", "skype", "website", "status", "language", "notifications",
              "group_id", "user_status"),
             ("notifications", "group_id"), _custom_fields(m.UserCustomFieldValue, "user_id")),
    Writable("organizations", m.Organization, ("name", "domains", "address", "phone", "email", "web", "minute_limit"),
             ("minute_limit",), _custom_fields(m.OrganizationCustomFieldValue, "organization_id")),
    Writable("ticket_posts", m.TicketPost, ("text",)),
    Writable("ticket_comments", m.TicketComment, ("text",)),
    # an option's name in the connection's language; its other languages are kept
    Writable(OPTIONS, m.CustomFieldOption, ("name_display",)),
)}
