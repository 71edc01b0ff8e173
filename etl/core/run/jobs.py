"""What a command or a scheduled job runs: pulls, pushes, pipelines, status, conflict settling.

Each kind of run has a module of its own (sync, push, pipeline, status); this one gathers their
entry points, and holds the two runs too small for a module.
"""

from __future__ import annotations

from etl.core.config import Config
from etl.core.connector import ConflictSettling, connector_of
from etl.core.errors import DesksyncError
from etl.core.mirror.db import ensure_current, open_engine, upgrade
from etl.core.push.conflicts import open_conflict
from etl.core.run.pipeline import PipelineSummary, pipeline_status, pipelines_status, run_pipeline
from etl.core.run.push import PushSummary, push
from etl.core.run.records import ensure_own_tables, long_lived_objects_frozen, new_limiters
from etl.core.run.status import status
from etl.core.run.sync import SyncSummary, sync

__all__ = [
    "PipelineSummary", "PushSummary", "SyncSummary", "init", "long_lived_objects_frozen", "new_limiters",
    "pipeline_status", "pipelines_status", "push", "resolve", "run_pipeline", "status", "sync",
]


def init(config: Config) -> str:
    """Create or upgrade the mirror's schema (Alembic), and the configured connectors' own tables;
    returns the revision it is at."""
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    try:
        revision = upgrade(engine)
        for settings in config.connections.values():
            ensure_own_tables(engine, settings)
        return revision
    finally:
        engine.dispose()


def resolve(config: Config, conflict_id: int, take: str) -> None:
    """Settle a conflict: `local` keeps the local value (pushed next), `remote` takes the remote one."""
    settling = ConflictSettling(lambda name: config.connection(name).timezone, config.connection)
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    try:
        ensure_current(engine)
        with engine.begin() as conn:
            try:
                connection = open_conflict(conn, conflict_id)["connection"]
                settings = config.connection(connection)
                connector_of(settings).resolve_conflict(conn, conflict_id, take, settling)
            except ValueError as exc:
                raise DesksyncError(str(exc)) from None
    finally:
        engine.dispose()
