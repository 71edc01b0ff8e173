"""Many accounts behind one simulator process: each a whole simulator app of its own (credentials,
data, rate budget), picked for each request by the account it names. A test or benchmark can then
run dozens of accounts without dozens of servers. A request naming no known account is refused
as bad credentials (HTTP 401), in the system's own error shape.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]


def basic_auth_email(scope: Scope) -> str | None:
    """EddyDesk: the user of the request's Basic authorization."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization" and value.startswith(b"Basic "):
            try:
                return base64.b64decode(value[6:]).decode().partition(":")[0]
            except (ValueError, UnicodeDecodeError):
                return None
    return None


def signed_email(scope: Scope) -> str | None:
    """Udesk: the administrator e-mail every signed request carries in its query (seed 000)."""
    values = parse_qs(scope.get("query_string", b"").decode(errors="replace")).get("email")
    return values[0] if values else None


class AccountsApp:
    """An ASGI app that hands each request to its account's app (`account_of` names it)."""

    def __init__(self, apps: dict[str, Any], account_of: Callable[[Scope], str | None], refused: bytes) -> None:
        self.apps, self.account_of, self.refused = apps, account_of, refused

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        app = self.apps.get(self.account_of(scope) or "") if scope["type"] == "http" else None
        if app is None:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": self.refused})
            return
        await app(scope, receive, send)
