"""The one exception tree of desksync.

    DesksyncError
    ├── ConfigError              bad configuration file or environment (names the key)
    ├── MirrorError              the local database cannot be used as asked
    └── RemoteError              anything a remote system did (carries system, status, code, message)
        ├── AuthError            credentials refused (HTTP 401/403)
        ├── RateLimitBlocked     the account is blocked for exceeding its rate limit
        ├── ApiError             a documented error answer (4xx with errors[]), not retried
        ├── TransientError       retryable (timeouts, connection errors, 5xx); raised when attempts ran out
        └── MalformedResponse    the answer does not follow the documented shape

Retry decisions live in etl.core.http.retry, never at the raise site.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DesksyncError(Exception):
    """Base of every error desksync raises on purpose."""


class Stopped(Exception):  # noqa: N818 - a run being stopped is not an error
    """The run is stopping (a signal, or an error elsewhere): raised where it waits or works, so
    that the page in progress commits and the run is recorded as interrupted."""


class ConfigError(DesksyncError):
    """The configuration file or environment is wrong; the message names the key."""


class MirrorError(DesksyncError):
    """The mirror database cannot be used as asked (unreachable, schema missing or behind)."""


class LeaseLost(DesksyncError):
    """The database session that held the account's lease dropped: another process may hold the
    account now, so this one sends nothing more to it (the run ends; the next one starts clean)."""


class AccountBusy(DesksyncError):
    """Another process holds the account: two would spend its rate budget twice."""

    def __init__(self, connection: str, holder: str) -> None:
        self.connection = connection
        super().__init__(
            f"connection {connection!r} is in use by {holder}: two processes on one account would each spend "
            "its whole rate budget and risk a block; run this again when that one has finished"
        )


@dataclass
class RemoteError(DesksyncError):
    system: str
    message: str
    status: int | None = None
    code: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" {self.path}" if self.path else ""
        status = f" HTTP {self.status}" if self.status is not None else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{self.system}{where}:{status}{code} {self.message}"


@dataclass
class AuthError(RemoteError):
    """Credentials refused (HTTP 401/403): every further request would be refused too."""


@dataclass
class RateLimitBlocked(RemoteError):
    blocked_until: float = 0.0  # wall-clock epoch seconds
    budget: str = "main"


@dataclass
class ApiError(RemoteError):
    details: list[dict[str, str]] = field(default_factory=list)


@dataclass
class TransientError(RemoteError):
    attempts: int = 0


@dataclass
class MalformedResponse(RemoteError):
    """The answer does not have the shape the documentation gives."""


class MassDeleteRefused(MirrorError):
    """A run would mark a suspiciously large share of a table deleted: nothing of it was written.

    A wrong base URL, a filter changed by mistake or an API that answers empty lists can all
    look like records vanishing; the user says whether they really did (--allow-mass-delete)."""
