"""`desksync demo`: the main job end to end against the built-in simulators, into SQLite.

EddyDesk, then Udesk ServiceGo, then Udesk knowledge and KM entities: each is mirrored, changed
remotely, and synced again. Last, the EddyDesk knowledge base is migrated into Udesk knowledge
by the `kb_to_knowledge` pipeline of config/desksync.example.toml (the README walks through it).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from etl.config import parse_config
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.limits import Limits
from etl.connectors.eddydesk.simulator.server import SimulatorServer
from etl.connectors.eddydesk.simulator.store import HelpdeskState
from etl.connectors.eddydesk.streams import select_streams
from etl.connectors.udesk.knowledge.simulator.server import KnowledgeServer
from etl.connectors.udesk.knowledge.simulator.store import KnowledgeState
from etl.connectors.udesk.knowledge.simulator.store import Sizes as KnowledgeSizes
from etl.connectors.udesk.servicego.simulator.server import ServiceGoServer
from etl.connectors.udesk.servicego.simulator.store import ServiceGoState
from etl.connectors.udesk.servicego.simulator.store import Sizes as ServiceGoSizes
from etl.core.http.ratelimit import RateLimiter
from etl.core.mirror.base import table_of
from etl.core.mirror.db import open_engine
from etl.core.mirror.meta import ChangeLog
from etl.core.run import jobs

DEMO_KEY_ENV = "DESKSYNC_DEMO_API_KEY"
DEMO_TOKEN_ENV = "DESKSYNC_DEMO_UDESK_TOKEN"
UDESK_TOKEN = "221b368d7f5f597867f525971f28ff75"  # seed 000's example token: the simulators' account
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config" / "desksync.example.toml"


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
    _udesk(database)
    click.echo(f"\nexplore it: sqlite3 {database} 'select id, title, status_id, date_updated from eddydesk_tickets limit 5'")
    click.echo(f"            sqlite3 {database} 'select id, name, organization_name, youxiang_tags from servicego_contact limit 5'")


def _udesk(database: Path) -> None:
    """ServiceGo records and Udesk knowledge into the same mirror."""
    os.environ[DEMO_TOKEN_ENV] = UDESK_TOKEN
    click.echo("\nstarting the Udesk simulators (ServiceGo: 6,000 records; knowledge: 300 questions, KM entities)…")
    servicego = ServiceGoState(ServiceGoSizes(customers=600, contacts=2_400, cases=3_000))
    knowledge = KnowledgeState(KnowledgeSizes(questions=300))
    # 60 requests per minute (the vendor's default), with a 1.5-second "minute" as above
    with ServiceGoServer(servicego, per_minute=60, minute_seconds=1.5) as sg, \
            KnowledgeServer(knowledge, per_minute=60, minute_seconds=1.5) as kn:
        common = {"email": "admin@udesk.cn", "api_token_env": DEMO_TOKEN_ENV,
                  "rate_limit": {"per_minute": 60, "window_seconds": 1.5}}
        config = parse_config({
            "mirror": {"url": f"sqlite:///{database.resolve()}"},
            "connections": {
                "servicego": {"system": "servicego", "base_url": sg.url, **common,
                              "objects": [{"name": "customer"}, {"name": "contact"}, {"name": "case"}]},
                "knowledge": {"system": "udesk_knowledge", "base_url": kn.url, "km_base_url": kn.km_url,
                              "robot_ids": [83], "agent_ids": [0, 12], **common},
            },
        })
        # one rate budget per account for all its runs, as the scheduler keeps it: runs with
        # budgets of their own could together exceed the simulators' 60 requests per "minute"
        limiters = {name: jobs.new_limiters(config.connection(name)) for name in ("servicego", "knowledge")}
        for name in ("servicego", "knowledge"):
            _summary(f"{name} first sync", jobs.sync(config, name, limiters=limiters[name]))
        servicego.random_changes(seed=7, updates=40, creates=10, deletes=5)
        knowledge.random_changes(seed=7, updates=10, creates=5, deletes=3)
        click.echo("remote changes: ServiceGo 40 updated, 10 created, 5 deleted; knowledge 10 updated, 5 created, 3 deleted")
        for name in ("servicego", "knowledge"):
            _summary(f"{name} incremental sync", jobs.sync(config, name, limiters=limiters[name]))
        status = jobs.status(config)
        click.echo("\nUdesk mirror tables (rows / deleted):")
        for name in ("servicego", "knowledge"):
            for stream, info in status["connections"][name]["streams"].items():
                click.echo(f"  {name + '/' + stream:<40} {info['rows']:>7} / {info['deleted_rows']}")
        _migrate_knowledge(database, config.connections["knowledge"].model_dump(by_alias=True), limiters["knowledge"])


def _migrate_knowledge(database: Path, knowledge: dict[str, Any], limiters: dict[str, RateLimiter]) -> None:
    """The example's kb_to_knowledge pipeline: the mirrored EddyDesk knowledge base into the running
    knowledge simulator (the EddyDesk one is gone: a pipeline reads the mirror only)."""
    if not EXAMPLE_CONFIG.is_file():
        click.echo("\n(knowledge migration skipped: config/desksync.example.toml is not beside this install)")
        return
    example = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    pipeline = {**example["pipelines"]["kb_to_knowledge"], "source": "demo"}
    config = parse_config({
        "mirror": {"url": f"sqlite:///{database.resolve()}"},
        "connections": {
            "demo": {"system": "eddydesk", "base_url": "http://127.0.0.1:9/api/v2", "email": "admin@example.com",
                     "api_key_env": DEMO_KEY_ENV, "timezone": "Europe/Riga"},
            "knowledge": {**knowledge, "push": example["connections"]["knowledge"]["push"]},
        },
        "pipelines": {"kb_to_knowledge": pipeline},
    })
    click.echo("\nknowledge migration: desksync pipeline run kb_to_knowledge (EddyDesk knowledge base -> Udesk knowledge)")
    for label in ("first run", "second run"):
        summary = jobs.run_pipeline(config, "kb_to_knowledge", limiters=limiters)
        for step in summary.steps:
            sent = step.push.ok if step.push is not None else 0
            click.echo(f"  {label}, {step.step} -> {step.target}: {step.created} created, {step.updated} updated, "
                       f"{step.unchanged} unchanged, {sent} sent")
        if label == "first run":
            folded = ", ".join(f"{source} into {into}" for source, into in summary.steps[0].folded)
            click.echo(f"  categories deeper than Udesk's 4 levels, folded into their 4th-level ancestor: {folded}")
        click.echo(f"  {summary.requests} requests")


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
