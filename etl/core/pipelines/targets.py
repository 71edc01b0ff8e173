"""Where a pipeline step writes: the target's mirror table and the fields a mapping may set.

A pipeline writes as a user of the mirror does: a new target record is a row with a negative
placeholder id, an update changes the row's writable columns, a delete marks it `is_deleted`;
the target's own push then sends it. So a mapped field is a writable column of the target
table (plus what a create needs: a knowledge record's catalog, an EddyDesk user's
departments).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from etl.core.connector import connector_of
from etl.core.errors import DesksyncError

if TYPE_CHECKING:
    from etl.core.config import ConnectionSettings

CreateExtra = Callable[[sa.Connection, str, int, Any], None]  # (conn, connection, new record id, value)


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


def target_of(conn: sa.Connection, settings: ConnectionSettings, connection: str, obj: str) -> Target:
    found = connector_of(settings)
    if found.pipeline_target is None:
        raise DesksyncError(f"connection {connection!r}: {settings.system} takes no pipeline writes")
    return found.pipeline_target(conn, settings, connection, obj)


def push_table_problem(system: str, available: tuple[str, ...], settings: Any, connection: str, obj: str) -> str:
    """Why `obj` cannot take a pipeline's writes on a connection whose push sections are keyed by
    table name (`settings.push`), or "": it must be one of `available` with a push section."""
    if obj not in available:
        return f"{obj!r} cannot be a pipeline target on {system} (available: {', '.join(available)})"
    if obj not in settings.push:
        return (f"connection {connection!r} has no push section for {obj!r} "
                "(pipelines write through the target's push)")
    return ""
