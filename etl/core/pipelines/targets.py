"""Where a pipeline step writes: the target's mirror table and the fields a mapping may set.

A pipeline writes as a user of the mirror does: a new target record is a row with a negative
placeholder id, an update changes the row's writable columns, a delete marks it `is_deleted`;
the target's own push (`etl.load`) then sends it. So a mapped field is a writable column of the
target table (plus what a create needs: a knowledge record's catalog, an EddyDesk user's
departments).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from etl.config import Connection, ServiceGoConnection, UdeskKnowledgeConnection
from etl.connectors.eddydesk import models as helpdesk
from etl.connectors.udesk.servicego.models import ObjectSchema, table_name
from etl.core.errors import DesksyncError
from etl.core.mirror.base import table_of

USER_DEPARTMENTS = table_of(helpdesk.UserDepartment)
CreateExtra = Callable[[sa.Connection, str, int, Any], None]


def _user_departments(conn: sa.Connection, connection: str, user_id: int, departments: Any) -> None:
    ids = departments if isinstance(departments, list) else [departments]
    for department in ids:
        conn.execute(USER_DEPARTMENTS.insert().values(connection=connection, user_id=user_id,
                                                      department_id=int(department)))


@dataclass(frozen=True)
class Target:
    push_name: str  # the name `desksync push` knows the table by
    table: sa.Table
    columns: dict[str, str]  # mapped field -> column
    extras: dict[str, CreateExtra] = field(default_factory=dict)  # create-only fields kept in child rows
    # the loader creates parents before children and re-keys references to placeholders (knowledge
    # catalogs): a record may refer to one not created yet
    takes_placeholders: bool = False

    def check(self, step: str, mapped: list[str], on_create: list[str]) -> None:
        unknown = [n for n in mapped if n not in self.columns] + [
            n for n in on_create if n not in self.columns and n not in self.extras]
        if unknown:
            raise DesksyncError(f"pipeline step {step!r}: {', '.join(unknown)} cannot be written on {self.push_name} "
                                f"(writable: {', '.join(sorted([*self.columns, *self.extras]))})")


def target_of(conn: sa.Connection, settings: Connection, connection: str, obj: str) -> Target:
    if isinstance(settings, ServiceGoConnection):
        from etl.connectors.udesk.servicego.diff import writable

        if not sa.inspect(conn).has_table(table_name(obj)):
            raise DesksyncError(f"the fields of {connection}'s {obj} are not known yet: pull it first "
                                f"(desksync sync {connection} {obj})")
        schema = ObjectSchema(obj)
        schema.load(conn)
        return Target(obj, schema.table, {f.field: f.column for f in writable(schema).values()})
    if isinstance(settings, UdeskKnowledgeConnection):
        from etl.connectors.udesk.knowledge.diff import WRITABLE as KNOWLEDGE

        spec = KNOWLEDGE[obj]
        context = ("agent_id", "knowledge_type", "parent_id") if obj == "catalogs" else ("agent_id", "catalog_id")
        return Target(obj, spec.table, {c: c for c in (*spec.columns, *context)}, takes_placeholders=True)
    from etl.connectors.eddydesk.diff import WRITABLE

    spec = WRITABLE[obj]
    extras: dict[str, CreateExtra] = {"department": _user_departments} if obj == "users" else {}
    return Target(obj, spec.table, {c: c for c in spec.columns}, extras)
