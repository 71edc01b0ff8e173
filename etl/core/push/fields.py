"""Base, local and remote versions of a record's writable fields: what changed where.

Values are compared in the remote API's own text form (what a write would send), so a value
that only looks different in the database (15.0 and "15.00", a timestamp with seconds the API
cannot hold) is not a change. `None` is an empty field.

    local changed, remote not        keep local (it will be pushed)
    remote changed, local not        take remote
    both changed to the same value   nothing to do
    both changed, differently        a conflict: the policy decides
        remote_wins  take remote (the local edit is dropped)
        local_wins   keep local (it will be pushed over the remote value)
        manual       keep local for now, record the conflict, push nothing until someone chooses
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Texts = Mapping[str, str | None]


@dataclass(frozen=True)
class FieldConflict:
    field: str
    base: str | None
    local: str | None
    remote: str | None


def changed_fields(base: Texts, current: Texts) -> list[str]:
    return [name for name, value in current.items() if base.get(name) != value]


def merge(base: Texts, local: Texts, remote: Texts, policy: str) -> tuple[dict[str, str | None], list[FieldConflict]]:
    """The local values to keep over the remote record, and the conflicts (empty unless both changed)."""
    keep: dict[str, str | None] = {}
    conflicts: list[FieldConflict] = []
    for name in changed_fields(base, local):
        mine, theirs, was = local.get(name), remote.get(name), base.get(name)
        if theirs in (was, mine):
            keep[name] = mine
            continue
        conflict = FieldConflict(name, was, mine, theirs)
        if policy == "remote_wins":
            continue
        keep[name] = mine
        if policy == "manual":
            conflicts.append(conflict)
    return keep, conflicts
