"""Which tables a push covers, and in what order."""

from __future__ import annotations

from typing import Any

from etl.core.errors import DesksyncError


def push_names(connection: str, order: tuple[str, ...], push: dict[str, Any], tables: tuple[str, ...]) -> list[str]:
    """The tables a push covers, in the order their creates must go (asked ones, or all configured)."""
    names = [n for n in order if n in push and (not tables or n in tables)]
    if not names:
        raise DesksyncError(f"connection {connection!r}: no table has a push section (see config/desksync.example.toml)")
    return names
