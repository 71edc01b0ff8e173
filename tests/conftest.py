"""Shared fixtures: a fresh mirror database (SQLite and a real PostgreSQL), simulators, configs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from etl.config import parse_config
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.limits import Limits
from etl.connectors.eddydesk.simulator.server import SimulatorServer
from etl.connectors.eddydesk.simulator.store import HelpdeskState
from etl.connectors.udesk.knowledge.simulator.server import KnowledgeServer
from etl.connectors.udesk.knowledge.simulator.store import KnowledgeState
from etl.connectors.udesk.knowledge.simulator.store import Sizes as KnowledgeSizes
from etl.connectors.udesk.servicego.simulator.server import ServiceGoServer
from etl.connectors.udesk.servicego.simulator.store import ServiceGoState
from etl.connectors.udesk.servicego.simulator.store import Sizes as ServiceGoSizes
from etl.core.config import Config
from etl.core.run import jobs

API_KEY_ENV = "DESKSYNC_TEST_API_KEY"
PG_ENV = "DESKSYNC_TEST_PG_URL"


def _pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new, empty mirror database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mirror.sqlite'}"
        return
    yield from _new_pg_database()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A brand-new, empty PostgreSQL mirror database (what several machines share)."""
    yield from _new_pg_database()


def _new_pg_database() -> Iterator[str]:
    admin = _pg_admin_url()
    if not admin:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set: CI must run the PostgreSQL tests (see scripts/postgres-for-tests)")
        pytest.skip(f"{PG_ENV} not set; run `make test` to start a local PostgreSQL")
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = sa.engine.make_url(admin).set(drivername="postgresql")
    plain = dsn.render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mirror.sqlite'}"


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatorServer]]:
    """Start simulators on 127.0.0.1; stopped after the test."""
    started: list[SimulatorServer] = []

    def start(sizes: Sizes | None = None, limits: Limits | None = None, latency: float = 0.0, seed: int = 1,
              timezone: str = "Europe/Riga") -> SimulatorServer:
        state = HelpdeskState(sizes or Sizes(), seed=seed, timezone=timezone)
        server = SimulatorServer(state, limits or Limits(per_minute=None, knowledge_base_per_minute=None), latency)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def connection_settings(server: SimulatorServer, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "system": "eddydesk",
        "base_url": server.url,
        "email": server.state.admin_email,
        "api_key_env": API_KEY_ENV,
        "timezone": "Europe/Riga",
        "lookback_seconds": 2,
        "retry": {"attempts": 4, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05},
        # the simulator fixture has no limit unless a test sets one; keep the client out of the way too
        "rate_limit": {"per_minute": 1_000_000, "knowledge_base_per_minute": 1_000_000},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return settings


@pytest.fixture
def make_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Config]:
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")

    def make(url: str, server: SimulatorServer, name: str = "helpdesk", init: bool = True, **overrides: Any) -> Config:
        config = parse_config({"mirror": {"url": url}, "connections": {name: connection_settings(server, **overrides)}},
                              base_dir=tmp_path)
        if init:
            jobs.init(config)
        return config

    return make


def write_config_file(path: Path, url: str, connections: dict[str, dict[str, Any]]) -> Path:
    """A TOML config for tests that run the real `desksync` command in a subprocess."""
    import tomli_w

    document = {"mirror": {"url": url}, "log": {"level": "info", "json": True}, "connections": connections}
    path.write_text(tomli_w.dumps(document))
    return path


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    from etl.core import log

    log.configure("warning", json=True)


# --- Udesk: ServiceGo, knowledge and KM ------------------------------------------------------------

UDESK_TOKEN_ENV = "DESKSYNC_TEST_UDESK_TOKEN"
UDESK_TOKEN = "221b368d7f5f597867f525971f28ff75"  # seed 000's worked example


@pytest.fixture
def servicego_sim() -> Iterator[Callable[..., ServiceGoServer]]:
    started: list[ServiceGoServer] = []

    def start(sizes: ServiceGoSizes | None = None, seed: int = 1, **kwargs: Any) -> ServiceGoServer:
        server = ServiceGoServer(ServiceGoState(sizes or ServiceGoSizes(), seed=seed, api_token=UDESK_TOKEN), **kwargs)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def knowledge_sim() -> Iterator[Callable[..., KnowledgeServer]]:
    started: list[KnowledgeServer] = []

    def start(sizes: KnowledgeSizes | None = None, seed: int = 1, **kwargs: Any) -> KnowledgeServer:
        server = KnowledgeServer(KnowledgeState(sizes or KnowledgeSizes(), seed=seed, api_token=UDESK_TOKEN), **kwargs)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def servicego_settings(server: ServiceGoServer, **overrides: Any) -> dict[str, Any]:
    return {
        "system": "servicego",
        "base_url": server.url,
        "email": server.state.email,
        "api_token_env": UDESK_TOKEN_ENV,
        "objects": [{"name": "customer"}, {"name": "contact"}, {"name": "case"}],
        "retry": {"attempts": 4, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05},
        "rate_limit": {"per_minute": 1_000_000},
        **overrides,
    }


def knowledge_settings(server: KnowledgeServer, **overrides: Any) -> dict[str, Any]:
    return {
        "system": "udesk_knowledge",
        "base_url": server.url,
        "km_base_url": server.km_url,
        "robot_ids": [83],
        "agent_ids": [0, 12],
        "email": server.state.email,
        "api_token_env": UDESK_TOKEN_ENV,
        "retry": {"attempts": 4, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05},
        "rate_limit": {"per_minute": 1_000_000},
        **overrides,
    }


@pytest.fixture
def udesk_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Config]:
    """A config with the given connections (name -> settings), its mirror initialised."""
    monkeypatch.setenv(UDESK_TOKEN_ENV, UDESK_TOKEN)

    def make(url: str, connections: dict[str, dict[str, Any]], init: bool = True, **mirror: Any) -> Config:
        config = parse_config({"mirror": {"url": url, **mirror}, "connections": connections}, base_dir=tmp_path)
        if init:
            jobs.init(config)
        return config

    return make
