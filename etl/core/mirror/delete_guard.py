"""The mass-delete guard: a run never marks a suspiciously large share of a table deleted.

Records that vanish are the one sign a sync reads as a deletion, and a misconfiguration (a wrong
base URL, a changed filter, an API answering empty lists) looks exactly like that. So before a
run flags rows as vanished it adds them to what it has flagged in that table so far and compares
the sum with the table's rows: past both `min_rows` and `share` of the table, the flagging is
refused with MassDeleteRefused inside the caller's transaction, so nothing of it is written.
Rows a record itself says are deleted (a soft-deleted ticket) are the remote's word, not a
guess, and do not count. The table is counted only when there is something to flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from etl.core.errors import MassDeleteRefused


@dataclass
class DeleteGuard:
    """One run's guard (each process that flags rows for the run keeps its own count)."""

    share: float = 0.10  # of a table's live rows one run may mark deleted
    min_rows: int = 10  # this many rows a table may always lose in a run, whatever its size
    allowed: bool = False  # --allow-mass-delete: the user says the deletions are real
    flagged: dict[tuple[str, str], int] = field(default_factory=dict)  # (connection, table) -> rows flagged

    def check(self, conn: sa.Connection, table: sa.Table, connection: str, adding: int,
              scope: Mapping[str, Any] | None = None) -> None:
        """Refuse to flag `adding` more rows of `table` when the run's flagged rows would pass the limit."""
        if adding <= 0:
            return
        key = (connection, table.name)
        total = self.flagged.get(key, 0) + adding
        if not self.allowed and total > self.min_rows:
            c = table.c
            live = conn.execute(sa.select(sa.func.count()).where(
                c.connection == connection, c.is_deleted.is_(False))).scalar() or 0
            before = live + self.flagged.get(key, 0)  # live when the run began, as far as this run knows
            if total > self.share * before:
                where = "".join(f", {k} = {v}" for k, v in (scope or {}).items())
                raise MassDeleteRefused(
                    f"refusing to mark {total:,} of {before:,} rows of {table.name} deleted (connection "
                    f"{connection!r}{where}): more than {self.share:.0%} of a table in one run looks like a "
                    f"misconfiguration (a wrong base_url, a changed filter) rather than real deletions, so nothing "
                    f"was marked. If the records really were deleted, run again with --allow-mass-delete "
                    f"(limits: mirror.mass_delete_share, mirror.mass_delete_min_rows)")
        self.flagged[key] = total
