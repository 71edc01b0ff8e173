"""The configuration's system-neutral models: the mirror, pipelines, jobs, the schedule, and
what every connection's settings share. Each connector owns its connection settings model
(a subclass of `ConnectionSettings`); etl.config reads the file and validates each connection
with its connector's model.

The file (TOML) only chooses: the mirror database, connections, streams and policies.
Secrets never live in it: each connection names the environment variable that holds its key.
Validation errors name the key path and what is wrong with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from etl.core.connector import connector
from etl.core.errors import ConfigError
from etl.core.log import register_secret


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RateBudget(Frozen):
    """An account's request budget: `per_minute` requests in every window (the documented minute)."""

    per_minute: Annotated[int, Field(gt=0)]
    window_seconds: Annotated[float, Field(gt=0)] = 60.0

    @property
    def per_second(self) -> float:
        return self.per_minute / self.window_seconds


class RetryConfig(Frozen):
    attempts: Annotated[int, Field(ge=1, le=20)] = 6
    backoff_seconds: Annotated[float, Field(ge=0)] = 0.5
    max_backoff_seconds: Annotated[float, Field(ge=0)] = 30.0


def check_url(value: str, example: str) -> str:
    try:
        url = httpx.URL(value)
    except Exception as exc:  # httpx raises several types for bad URLs
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"must be an http(s) URL with a host, e.g. {example}")
    return value.rstrip("/")


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Riga)") from None
    return value


def check_email(value: str) -> str:
    if "@" not in value:
        raise ValueError("must be the API user's e-mail address")
    return value


def secret_from_env(env_name: str, connection: str, key: str) -> str:
    """A connection's secret, read from the environment variable the config names."""
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(f"connections.{connection}.{key}: environment variable {env_name} is not set or empty")
    register_secret(value)
    return value


def push_tables_check(available: tuple[str, ...]) -> Any:
    """A settings model's validator refusing push sections for tables that take no write-back."""
    return field_validator("push")(classmethod(lambda cls, value: known_push_tables(value, available)))


def known_push_tables(value: dict[str, Any], available: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(value) - set(available))
    if unknown:
        raise ValueError(f"write-back is not available for {', '.join(unknown)} (available: {', '.join(available)})")
    return value


class ConnectionSettings(Frozen):
    """What the engine reads of every connection; a connector's model adds the rest."""

    system: str
    timezone: str = "UTC"
    rate_limit: RateBudget
    retry: RetryConfig = RetryConfig()
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    # `push` first pulls the tables it would update or delete in, so that a remote edit it has
    # not seen meets the conflict policy instead of being overwritten; false: push what the
    # mirror holds (when a pull always runs just before, say)
    pull_before_push: bool = True

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)


class MirrorConfig(Frozen):
    url: str | None = None
    url_env: str | None = None
    # Scans of at least this many pages (30 records each on EddyDesk, 100 on ServiceGo) are
    # written by the run's writer process, so that fetching and writing use two cores; null: never.
    writer_process_min_pages: int | None = Field(default=50, ge=1)
    # The mass-delete guard (etl.core.mirror.delete_guard): a run that would mark more than this share
    # of a table's rows deleted, and more than mass_delete_min_rows of them, stops instead.
    mass_delete_share: float = Field(default=0.10, ge=0, le=1)
    mass_delete_min_rows: int = Field(default=10, ge=0)

    def resolved_url(self, base_dir: Path) -> str:
        if self.url_env:
            value = os.environ.get(self.url_env)
            if not value:
                raise ConfigError(f"mirror.url_env: environment variable {self.url_env} is not set or empty")
            return value
        url = self.url or "sqlite:///desksync.sqlite"
        if url.startswith("sqlite:///") and not url.startswith(("sqlite:////", "sqlite:///file:")):
            # relative SQLite paths are relative to the config file, not the working directory
            url = "sqlite:///" + str((base_dir / url[len("sqlite:///") :]).resolve())
        return url


class LogConfig(Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_output: bool | None = Field(default=None, alias="json")


class PipelineLookup(Frozen):
    """A reference through the id map: the target id that an earlier step wrote for the source
    record `key` renders (a template giving the source id; empty or "0": no reference)."""

    lookup: str  # a step of the same pipeline (or its own, for a tree's parent)
    key: str
    empty: int | None = None  # the value when there is no reference (knowledge: 0, the top level)


MapValue = PipelineLookup | str | bool | int | float | list[Any]


class TreeFold(Frozen):
    """A source tree deeper than the target allows: records below `max_depth` are not written;
    they and what refers to them go to their ancestor at `max_depth` (the run reports which)."""

    parent: str  # the source column holding the parent's id (empty or 0: top level)
    max_depth: Annotated[int, Field(ge=1)]


class PipelineStep(Frozen):
    """One source object into one target object: `map` gives each target field a template
    ("{{ column }}"; text without braces is a constant), a number or list constant, or a lookup."""

    name: str
    source_table: str | None = None  # a mirror table (its rows of the source connection)
    sql: str | None = None  # or a query (`:connection` is the source connection)
    source_object: str | None = None  # the id map's name for the source (default: source_table)
    id_column: str = "id"
    only_if: str | None = None  # a template: rows for which it renders empty, "0" or "false" are skipped
    target_object: str  # EddyDesk and knowledge: the table's stream name; ServiceGo: objectApiName
    match: tuple[str, ...] = ()  # target fields: an existing target record with equal values is taken over
    match_ignore_case: bool = False
    map: dict[str, MapValue]
    on_create: dict[str, MapValue] = {}  # only for creates (EddyDesk users: group_id, department = [ids])
    tree: TreeFold | None = None

    @model_validator(mode="after")
    def _source(self) -> PipelineStep:
        if (self.source_table is None) == (self.sql is None):
            raise ValueError("give exactly one of source_table and sql")
        if self.sql is not None and not self.source_object:
            raise ValueError("a sql source needs source_object (its name in the id map)")
        from etl.core.pipelines.templates import check_templates  # Jinja2, where a pipeline is configured

        values = {**self.map, **self.on_create, **({"only_if": self.only_if} if self.only_if else {})}
        check_templates({name: value.key if isinstance(value, PipelineLookup) else value
                         for name, value in values.items() if isinstance(value, str | PipelineLookup)})
        return self

    @property
    def object(self) -> str:
        return self.source_object or self.source_table or ""


class PipelineConfig(Frozen):
    """Records of one connection's mirror written into another platform through its loaders."""

    source: str  # the connection whose mirror rows are read
    target: str  # the connection written to (its push settings apply)
    operations: tuple[Literal["create", "update", "delete"], ...] = ("create", "update")
    # a target field changed on the target since the pipeline last sent it: overwritten (source_wins) or kept
    conflict_policy: Literal["source_wins", "target_wins"] = "source_wins"
    vars: dict[str, Any] = {}  # constants the templates can use (e.g. language = "en")
    steps: tuple[PipelineStep, ...]

    @model_validator(mode="after")
    def _steps(self) -> PipelineConfig:
        seen: list[str] = []
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"step {step.name!r} is given twice")
            for name, value in {**step.map, **step.on_create}.items():
                if isinstance(value, PipelineLookup) and value.lookup not in (*seen, step.name):
                    raise ValueError(f"step {step.name!r}, {name}: lookup {value.lookup!r} is not an earlier step "
                                     f"(earlier: {', '.join(seen) or 'none'})")
            seen.append(step.name)
        if not self.steps:
            raise ValueError("a pipeline needs at least one step")
        return self


class JobConfig(Frozen):
    """One scheduled job on an interval or a cron cadence: a pull of one connection's streams, a
    push of its tables with write-back configured (`streams` then names tables; empty: all), or a
    pipeline run (`pipeline`; its connection is the pipeline's target, whose account it uses)."""

    connection: str = ""
    kind: Literal["pull", "push", "pipeline"] = "pull"
    pipeline: str | None = None
    streams: tuple[str, ...] = ()  # empty: the connection's configured streams (objects, lists)
    every_seconds: Annotated[float, Field(gt=0)] | None = None
    cron: str | None = None  # five crontab fields, e.g. "*/5 * * * *"
    reconcile: bool = False  # every run also looks for records deleted outright
    max_lag_minutes: Annotated[float, Field(gt=0)] | None = None  # health: data older than this is unhealthy

    @model_validator(mode="after")
    def _cadence(self) -> JobConfig:
        if (self.every_seconds is None) == (self.cron is None):
            raise ValueError("give exactly one of every_seconds and cron")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron)
            except ValueError as exc:
                raise ValueError(f"cron {self.cron!r} is not a crontab expression: {exc}") from None
        if (self.kind == "pipeline") != (self.pipeline is not None):
            raise ValueError("a pipeline job names its pipeline (pipeline = \"NAME\"), and only a pipeline job does")
        if self.kind != "pipeline" and not self.connection:
            raise ValueError("connection: required key is missing")
        if self.kind != "pull" and self.reconcile:
            raise ValueError("reconcile applies to pull jobs only")
        return self


class ScheduleConfig(Frozen):
    """How the scheduler treats failures, and what `desksync status --check` calls unhealthy."""

    misfire_grace_seconds: Annotated[float, Field(gt=0)] = 300.0
    failure_backoff_seconds: Annotated[float, Field(gt=0)] = 30.0
    max_failure_backoff_seconds: Annotated[float, Field(gt=0)] = 3600.0
    max_consecutive_failures: Annotated[int, Field(ge=1)] = 3
    # runs at once, over all accounts (one account's never overlap); None: as many as there are jobs
    max_concurrent_runs: Annotated[int, Field(ge=1)] | None = None


class ExecutorConfig(Frozen):
    """Jobs run by Celery workers (`desksync worker`) on any number of machines, sent there by the
    scheduler through a Redis broker (etl.core.run.dispatch); without this section the scheduler
    runs them itself."""

    kind: Literal["celery"]
    broker_url_env: str = "DESKSYNC_BROKER_URL"  # e.g. redis://:password@broker.internal:6379/0
    queue: str = "desksync"
    # a task whose account is busy (another job of it runs) goes back to the broker for this long
    busy_retry_seconds: Annotated[float, Field(gt=0)] = 30.0
    # a task unacknowledged this long is given to another worker (its worker is presumed dead):
    # longer than the longest job, or a long job is delivered twice (the second waits its turn)
    visibility_timeout_seconds: Annotated[float, Field(gt=0)] = 3600.0
    # how often a worker looks for such tasks
    restore_interval_seconds: Annotated[float, Field(gt=0)] = 10.0
    # a task still queued (no worker took it) or whose worker died, this long after, is sent anew:
    # the broker lost it; must exceed visibility_timeout_seconds
    requeue_after_seconds: Annotated[float, Field(gt=0)] = 7200.0

    @model_validator(mode="after")
    def _timeouts(self) -> ExecutorConfig:
        if self.busy_retry_seconds >= self.visibility_timeout_seconds:
            raise ValueError("busy_retry_seconds must be shorter than visibility_timeout_seconds (a task waiting "
                             "longer in a worker is delivered again)")
        if self.requeue_after_seconds <= self.visibility_timeout_seconds:
            raise ValueError("requeue_after_seconds must exceed visibility_timeout_seconds (a dead worker's task "
                             "is the broker's to hand on first)")
        return self

    def broker_url(self) -> str:
        value = os.environ.get(self.broker_url_env)
        if not value:
            raise ConfigError(f"executor.broker_url_env: environment variable {self.broker_url_env} is not set or empty")
        register_secret(value)
        return value


class Config(Frozen):
    mirror: MirrorConfig = MirrorConfig()
    log: LogConfig = LogConfig()
    # each a connector's settings model (etl.config builds the union from the connectors in use)
    connections: dict[str, ConnectionSettings]
    pipelines: dict[str, PipelineConfig] = {}
    jobs: dict[str, JobConfig] = {}
    schedule: ScheduleConfig = ScheduleConfig()
    executor: ExecutorConfig | None = None
    base_dir: Path = Path(".")
    connector_modules: tuple[str, ...] = ()  # connectors of other packages (etl.core.connector)

    @model_validator(mode="before")
    @classmethod
    def _pipeline_job_connections(cls, data: Any) -> Any:
        """A pipeline job runs on its pipeline's target account: that is its connection."""
        if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
            return data
        pipelines: dict[str, Any] = data["pipelines"] if isinstance(data.get("pipelines"), dict) else {}
        jobs = {}
        for name, job in data["jobs"].items():
            if isinstance(job, dict) and job.get("kind") == "pipeline" and not job.get("connection"):
                pipeline = pipelines.get(str(job.get("pipeline")))
                target = pipeline.get("target") if isinstance(pipeline, dict) else None
                job = {**job, "connection": target} if isinstance(target, str) else job
            jobs[name] = job
        return {**data, "jobs": jobs}

    @model_validator(mode="after")
    def _job_connections(self) -> Config:
        known = ", ".join(sorted(self.connections)) or "none"
        for name, job in self.jobs.items():
            if job.pipeline is not None and job.pipeline not in self.pipelines:
                raise ValueError(f"jobs.{name}.pipeline: {job.pipeline!r} is not a pipeline "
                                 f"(known: {', '.join(sorted(self.pipelines)) or 'none'})")
            if job.connection not in self.connections:
                raise ValueError(f"jobs.{name}.connection: {job.connection!r} is not a connection (known: {known})")
        for name, pipeline in self.pipelines.items():
            for end in ("source", "target"):
                if getattr(pipeline, end) not in self.connections:
                    raise ValueError(f"pipelines.{name}.{end}: {getattr(pipeline, end)!r} is not a connection "
                                     f"(known: {known})")
            self._check_targets(name, pipeline)
        return self

    def _check_targets(self, name: str, pipeline: PipelineConfig) -> None:
        """Each step's target object takes write-back on the target connection (its push settings apply)."""
        target = self.connections[pipeline.target]
        for n, step in enumerate(pipeline.steps):
            problem = connector(target.system).pipeline_target_problem(target, pipeline.target, step.target_object)
            if problem:
                raise ValueError(f"pipelines.{name}.steps.{n}.target_object: {problem}")

    def connection(self, name: str) -> ConnectionSettings:
        try:
            return self.connections[name]
        except KeyError:
            known = ", ".join(sorted(self.connections)) or "none"
            raise ConfigError(f"connection {name!r} is not in the configuration (known: {known})") from None

    def pipeline(self, name: str) -> PipelineConfig:
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise ConfigError(f"pipeline {name!r} is not in the configuration (known: {known})") from None


def format_validation_error(exc: ValidationError, source: str, systems: tuple[str, ...] = ()) -> str:
    """One line per problem, each naming its key path (the union's system tags left out)."""
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"] if p not in systems)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        lines.append(f"  {path}: {msg}" if path else f"  {msg}")
    return "\n".join(lines)
