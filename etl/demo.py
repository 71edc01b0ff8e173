"""`desksync demo`: the main job end to end against the built-in simulator, into SQLite."""

from __future__ import annotations

import os
from pathlib import Path

import click
import sqlalchemy as sa

from etl import jobs
from etl.config import parse_config
from etl.mirror.base import table_of
from etl.mirror.db import open_engine
from etl.mirror.meta import ChangeLog
from etl.simulators.eddydesk.data import Sizes
from etl.simulators.eddydesk.limits import Limits
from etl.simulators.eddydesk.server import SimulatorServer
from etl.simulators.eddydesk.store import HelpdeskState
from etl.streams.eddydesk import select_streams

DEMO_KEY_ENV = "DESKSYNC_DEMO_API_KEY"


def run_demo(database: Path) -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    if database.exists():
        database.unlink()
    os.environ[DEMO_KEY_ENV] = "sim-api-key"
    click.echo("starting the EddyDesk simulator (1,000 tickets, 200 users, 30 organizations, 80 articles)…")
    state = HelpdeskState(Sizes(tickets=1000, users=200, organizations=30, kb_categories=12, kb_articles=80))
    # A 1.5-second "minute": the documented 300/60 limits, forty times faster than real.
    limits = Limits(per_minute=300, knowledge_base_per_minute=60, minute_seconds=1.5)
    with SimulatorServer(state, limits, latency=0.002) as server:
        config = parse_config(
            {
                "mirror": {"url": f"sqlite:///{database.resolve()}"},
                "connections": {
                    "demo": {
                        "system": "eddydesk",
                        "base_url": server.url,
                        "email": "admin@example.com",
                        "api_key_env": DEMO_KEY_ENV,
                        "timezone": "Europe/Riga",
                        "rate_limit": {"window_seconds": 1.5},
                    }
                },
            }
        )
        jobs.init(config)
        click.echo(f"full sync into {database} (rate limited to 300 requests per 1.5 s)…")
        first = jobs.sync(config, "demo")
        _summary("first sync", first)
        changes = state.random_changes(seed=7, updates=25, creates=5, soft_deletes=3, hard_deletes=2)
        click.echo(
            f"remote changes: {len(changes['updated'])} tickets updated, {len(changes['created'])} created, "
            f"{len(changes['soft_deleted'])} soft-deleted, {len(changes['hard_deleted'])} deleted outright"
        )
        second = jobs.sync(config, "demo", reconcile_deletes=True)
        _summary("incremental sync with --reconcile", second)
        _tables(config, database)
        click.echo(f"rate-limit rejections by the simulator: {limits.rejections}")
    click.echo(f"\nexplore it: sqlite3 {database} 'select id, title, status_id, date_updated from eddydesk_tickets limit 5'")


def _summary(label: str, s: jobs.SyncSummary) -> None:
    click.echo(
        f"  {label}: {s.status} in {s.seconds:.1f}s — {s.inserted} inserted, {s.updated} updated, "
        f"{s.deleted} deleted, {s.requests} requests"
    )


def _tables(config: object, database: Path) -> None:
    engine = open_engine(f"sqlite:///{database.resolve()}")
    with engine.connect() as conn:
        click.echo("\nmirror tables (rows / deleted):")
        tables = {s.table.name: s.table for s in select_streams(("default",))}
        for t in tables.values():
            total, deleted = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((t.c.is_deleted.is_(True), 1), else_=0)), 0))
                .where(t.c.connection == "demo")
            ).one()
            click.echo(f"  {t.name:<40} {total:>7} / {deleted}")
        changes = conn.execute(sa.select(sa.func.count()).select_from(table_of(ChangeLog))).scalar_one()
        click.echo(f"  {'change_log':<40} {changes:>7}")
    engine.dispose()
