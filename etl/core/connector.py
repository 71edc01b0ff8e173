"""What a remote system provides to the engine, and where the engine finds it.

A connector is one plain `Connector` value: the system's settings model, how to open its
client and rate budgets, how to plan a pull, which tables a push sends and how, what a
pipeline may write into, and how a conflict on one of its tables is settled. The engine (the
runs in etl.core.run, pipelines, status) calls these functions and never names a system.

Connectors are found by their `system` name, lazily (a run imports only the systems its
configuration uses): the built-in ones through the `desksync.connectors` entry points of the
installed packages (pyproject.toml), others from modules the configuration lists
(`connector_modules = ["my_package.zendesk"]`), each of which defines `CONNECTOR`.
CONTRIBUTING.md shows how to write one, with the test connector in tests/connectors/ as the example.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import sqlalchemy as sa

from etl.core.errors import ConfigError

if TYPE_CHECKING:
    from etl.core.config import ConnectionSettings
    from etl.core.http.ratelimit import RateLimiter
    from etl.core.http.session import Session
    from etl.core.pipelines.targets import Target
    from etl.core.pull.context import RunContext
    from etl.core.push.journal import PushOutcome

ENTRY_POINTS = "desksync.connectors"


class Client(Protocol):
    """What the engine needs of a connector's client: its HTTP sessions (the first carries the
    run's counters; Udesk knowledge has a second, for KM entities) and closing it."""

    @property
    def session(self) -> Session: ...

    def sessions(self) -> list[Session]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PlannedStream:
    """One stream of a run: its name, the rate budget it draws on, and how to run it."""

    name: str
    budget: str
    run: Callable[[RunContext], None]
    records_success: bool = True  # False: the stream records success with its own cursor
    state_key: str = ""  # the stream's sync_state row, when not its name

    @property
    def key(self) -> str:
        return self.state_key or self.name


@dataclass(frozen=True)
class PullRequest:
    """What a pull was asked for: `streams` named on the command line or by the job (empty: the
    connection's configured ones); `full` rescans from the start; `reconcile_deletes` looks for
    records deleted outright now, whatever the connection's cadence for it."""

    engine: sa.Engine
    connection: str
    settings: Any
    streams: tuple[str, ...]
    full: bool
    reconcile_deletes: bool


@dataclass(frozen=True)
class PushTable:
    """One table of a push: how it is planned from the mirror, and sent once a client exists."""

    name: str
    table_name: str
    plan: Callable[[sa.Connection], PushOutcome]
    send: Callable[[Any, PushOutcome], None]  # (client, outcome)


@dataclass(frozen=True)
class PushRequest:
    engine: sa.Engine
    connection: str
    settings: Any
    retry_failed: bool  # rows held by an earlier push are sent again
    tables: tuple[str, ...]  # asked for (empty: every table with write-back configured)


@dataclass(frozen=True)
class StatusTable:
    """A mirrored table `desksync status` reports, and the sync_state row of its cursor."""

    name: str
    table: sa.Table
    state_key: str


@dataclass(frozen=True)
class ConflictSettling:
    """What settling a conflict needs of the configuration."""

    timezone_of: Callable[[str], str]  # connection -> its account's zone
    settings_of: Callable[[str], Any]  # connection -> its settings


def _same_names(settings: Any, pushed: list[str]) -> tuple[str, ...]:
    return tuple(pushed)


def _no_pipelines(settings: Any, connection: str, obj: str) -> str:
    return f"{settings.system} takes no pipeline writes"


@dataclass(frozen=True)
class Connector:
    """One remote system, as the engine sees it. Each function gets the connection's settings
    (an instance of `settings`) as the connector built them."""

    system: str  # `system = "..."` in a connection's configuration
    settings: type[ConnectionSettings]
    # (connection name, settings, transport or None, the account's limiters or None) -> client
    connect: Callable[[str, Any, httpx.BaseTransport | None, dict[str, RateLimiter] | None], Client]
    new_limiters: Callable[[Any], dict[str, RateLimiter]]  # one set per account, shared by its jobs
    plan_pull: Callable[[PullRequest], list[PlannedStream]]
    status_tables: Callable[[sa.Connection, Any], list[StatusTable]]
    push_tables: Callable[[PushRequest], list[PushTable]]  # in the order their creates must go
    # conflict id, "local" or "remote": settles an open conflict on one of this system's tables
    resolve_conflict: Callable[[sa.Connection, int, str, ConflictSettling], None]
    # the streams whose pull brings the remote's state of these push tables (default: same names)
    pull_streams_for_push: Callable[[Any, list[str]], tuple[str, ...]] = _same_names
    # (settings, connection, object) -> where a pipeline step writes
    pipeline_target: Callable[[sa.Connection, Any, str, str], Target] | None = None
    # (settings, connection, object) -> why a pipeline cannot write there, or "" (checked on load)
    pipeline_target_problem: Callable[[Any, str, str], str] = _no_pipelines
    # a mirror table of this system by name, where the models' metadata does not hold it (tables
    # made at run time, such as ServiceGo's per object): pipelines read their sources through it
    runtime_table: Callable[[sa.Connection, str], sa.Table | None] | None = None
    # tables outside the Alembic history (a connector of another package), created on first use
    own_tables: Callable[[], list[sa.Table]] | None = None


def declare(system: str, settings: type[ConnectionSettings], functions: Mapping[str, Any]) -> Connector:
    """A connector made of a module's functions named as the Connector's fields (`connect`,
    `plan_pull`, `push_tables`, ...): `CONNECTOR = declare("notes", NotesConnection, globals())`."""
    names = [f.name for f in fields(Connector) if f.name not in ("system", "settings")]
    missing = [f.name for f in fields(Connector) if f.name in names and f.default is MISSING and f.name not in functions]
    if missing:
        raise TypeError(f"connector {system!r} defines no {', '.join(missing)}")
    return Connector(system, settings, **{name: functions[name] for name in names if name in functions})


_connectors: dict[str, Connector] = {}


def register(found: Connector) -> Connector:
    """Make a connector known by its system name (a connector module's `CONNECTOR` is registered
    when the module is loaded; call this for one built another way)."""
    _connectors[found.system] = found
    return found


def load_modules(modules: Iterable[str]) -> None:
    """Register the `CONNECTOR` of each named module (the configuration's `connector_modules`)."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"connector_modules: cannot import {name!r}: {exc}") from None
        found = getattr(module, "CONNECTOR", None)
        if not isinstance(found, Connector):
            raise ConfigError(f"connector_modules: {name!r} defines no CONNECTOR (an etl.core.connector.Connector)")
        register(found)


def _installed() -> dict[str, Any]:
    return {point.name: point for point in entry_points(group=ENTRY_POINTS)}


def known_systems() -> list[str]:
    return sorted({*_connectors, *_installed()})


def connector(system: str) -> Connector:
    """The connector of `system`, loaded on first use."""
    if system not in _connectors:
        point = _installed().get(system)
        if point is None:
            raise ConfigError(f"no connector for system {system!r} (known: {', '.join(known_systems())})")
        loaded = point.load()
        if not isinstance(loaded, Connector) or loaded.system != system:
            raise ConfigError(f"entry point {point.value!r} is not the Connector of {system!r}")
        register(loaded)
    return _connectors[system]


def connector_of(settings: ConnectionSettings) -> Connector:
    return connector(settings.system)
