"""A pipeline run: each step's source records staged into the target's mirror table, then
pushed through the target's connector, step by step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from etl.core.config import Config, ConnectionSettings
from etl.core.connector import connector_of
from etl.core.http.ratelimit import RateLimiter
from etl.core.log import get_logger
from etl.core.mirror.db import ensure_current, open_engine
from etl.core.pipelines.stage import LINKS, IdMap, StepReport, stage
from etl.core.pipelines.targets import target_of
from etl.core.run.push import PushSummary, push_into
from etl.core.run.records import Ending, end_run, own_account, start_run, watch_ending
from etl.core.run.sync import connect


@dataclass
class PipelineSummary:
    pipeline: str
    dry_run: bool
    steps: list[StepReport] = field(default_factory=list)  # in step order
    requests: int = 0
    rate_limit_wait_seconds: float = 0.0
    run_id: int | None = None  # its sync_runs row (kind "pipeline"); none for a dry run

    def sent(self, operation: str) -> int:
        return sum(s.push.done.get(operation, 0) for s in self.steps if s.push is not None)

    @property
    def held(self) -> int:
        return sum(len(s.held) + (s.push.failed if s.push is not None else 0) for s in self.steps)


def _table_finder(source: ConnectionSettings) -> Callable[[sa.Connection, str], sa.Table | None]:
    found = connector_of(source).runtime_table
    return found if found is not None else (lambda conn, name: None)


def run_pipeline(config: Config, name: str, *, dry_run: bool = False, retry_failed: bool = False,
                 transport: httpx.BaseTransport | None = None, job: str | None = None,
                 limiters: dict[str, RateLimiter] | None = None) -> PipelineSummary:
    """Stage each step's source records into the target's mirror table, then push that table,
    step by step (a step's records exist on the target before the next step refers to them).
    A dry run stages every step in one transaction it rolls back, and sends nothing. One
    sync_runs row of kind "pipeline" on the target connection records a run."""
    pipeline = config.pipeline(name)
    settings = config.connection(pipeline.target)
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    summary = PipelineSummary(name, dry_run)
    ending = Ending()
    lease = own_account(engine, pipeline.target, settings, limiters)  # for the writes to the target
    try:
        with watch_ending(ending):
            ensure_current(engine)
            with engine.connect() as conn:
                targets = {s.name: target_of(conn, settings, pipeline.target, s.target_object) for s in pipeline.steps}
            idmap = IdMap(pipeline, targets, dry_run, _table_finder(config.connection(pipeline.source)))
            if dry_run:
                with engine.connect() as conn, conn.begin() as transaction:
                    summary.steps = [stage(conn, name, pipeline, s, idmap) for s in pipeline.steps]
                    transaction.rollback()
                return summary
            with lease as limiters:
                summary.run_id = start_run(engine, pipeline.target, "pipeline", [s.name for s in pipeline.steps], job)
                log = get_logger(pipeline=name, target=pipeline.target)
                for step in pipeline.steps:
                    idmap.links.clear()  # the push rewrote placeholders: read the map again
                    with engine.begin() as conn:
                        report = stage(conn, name, pipeline, step, idmap)
                    summary.steps.append(report)
                    pushed = PushSummary(pipeline.target, False)
                    push_into(engine, pipeline.target, settings, pushed, retry_failed, (report.target,),
                               lambda: connect(pipeline.target, settings, transport, limiters))
                    report.push = pushed.tables.get(report.target)
                    summary.requests += pushed.requests
                    summary.rate_limit_wait_seconds += pushed.rate_limit_wait_seconds
                    log.info("pipeline_step_finished", step=step.name, created=report.created, updated=report.updated,
                             deleted=report.deleted, held=len(report.held), folded=len(report.folded),
                             sent=report.push.ok if report.push else 0)
            ending.status = "ok"
            if summary.held:
                ending.error = f"{summary.held} records held (desksync pipeline status {name} lists them)"
    finally:
        if summary.run_id is not None:
            end_run(engine, summary.run_id, ending.status, ending.error, requests=summary.requests,
                     rate_limit_wait_seconds=summary.rate_limit_wait_seconds,
                     records_read=sum(s.created + s.updated + s.deleted + s.unchanged for s in summary.steps),
                     rows_inserted=summary.sent("create"), rows_updated=summary.sent("update"),
                     rows_deleted=summary.sent("delete"))
        engine.dispose()
    return summary


def pipeline_status(config: Config, name: str) -> dict[str, Any]:
    """A pipeline's id map per step: records linked, folded, and held with their message."""
    pipeline = config.pipeline(name)
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    try:
        ensure_current(engine)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(LINKS).where(LINKS.c.pipeline == name)
                                .order_by(LINKS.c.step, LINKS.c.source_id)).mappings().all()
    finally:
        engine.dispose()
    out: dict[str, Any] = {}
    for step in pipeline.steps:
        mine = [r for r in rows if r["step"] == step.name]
        out[step.name] = {
            "linked": sum(1 for r in mine if r["target_id"] is not None and r["target_id"] > 0),
            "waiting_for_push": sum(1 for r in mine if r["target_id"] is not None and r["target_id"] < 0),
            "folded": {r["source_id"]: r["folded_into"] for r in mine if r["folded_into"] is not None},
            "held": {r["source_id"]: r["error"] for r in mine if r["error"] is not None},
        }
    return out


def pipelines_status(config: Config) -> dict[str, dict[str, Any]]:
    """`pipeline_status` of every configured pipeline (for metrics)."""
    return {name: pipeline_status(config, name) for name in config.pipelines}
