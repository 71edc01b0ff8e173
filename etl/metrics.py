"""desksync's state for monitoring: the health verdict and Prometheus metrics, built from the one
status report (`etl.core.run.jobs.status`), so `status --json`, `status --check`, `status --prometheus` and
the console's /metrics and /healthz can never disagree.

prometheus-client writes the text format (escaping, HELP and TYPE lines) and its parser reads it
back in the tests; a node-exporter textfile collector takes `status --prometheus` as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from etl.health import problems_of


def _seconds(moment: str | None) -> float | None:
    if not moment:
        return None
    parsed = datetime.fromisoformat(moment)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class _ReportCollector(Collector):
    def __init__(self, report: dict[str, Any], pipelines: dict[str, dict[str, Any]], now: datetime) -> None:
        self.report, self.pipelines, self.now = report, pipelines, now.timestamp()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        healthy = GaugeMetricFamily("desksync_healthy", "1 when status --check finds no problem, else 0")
        healthy.add_metric([], 0.0 if problems_of(self.report) else 1.0)
        yield healthy
        yield from self._streams()
        yield from self._connections()
        yield from self._jobs()
        pipeline_held = GaugeMetricFamily("desksync_pipeline_held_records",
                                          "Pipeline records held with the target's error", labels=["pipeline", "step"])
        for pipeline, steps in self.pipelines.items():
            for step, info in steps.items():
                pipeline_held.add_metric([pipeline, step], float(len(info["held"])))
        yield pipeline_held

    def _streams(self) -> Iterator[GaugeMetricFamily]:
        labels = ["connection", "stream"]
        rows = GaugeMetricFamily("desksync_stream_rows", "Mirrored rows of the stream's table", labels=labels)
        deleted = GaugeMetricFamily("desksync_stream_deleted_rows", "Rows flagged deleted", labels=labels)
        success = GaugeMetricFamily("desksync_stream_last_success_timestamp_seconds",
                                    "When the stream last synced without error (Unix time)", labels=labels)
        fresh = GaugeMetricFamily("desksync_stream_freshness_seconds",
                                  "Seconds since the stream last synced without error", labels=labels)
        failing = GaugeMetricFamily("desksync_stream_failing",
                                    "1 when the stream's latest sync failed (its last_error is set)", labels=labels)
        for name, info in self.report["connections"].items():
            for stream, s in info["streams"].items():
                rows.add_metric([name, stream], float(s["rows"]))
                deleted.add_metric([name, stream], float(s["deleted_rows"]))
                failing.add_metric([name, stream], 1.0 if s["last_error"] else 0.0)
                last = _seconds(s["last_success_at"])
                if last is not None:
                    success.add_metric([name, stream], last)
                    fresh.add_metric([name, stream], max(0.0, self.now - last))
        yield from (rows, deleted, success, fresh, failing)

    def _connections(self) -> Iterator[GaugeMetricFamily]:
        labels = ["connection"]
        run_ok = GaugeMetricFamily("desksync_last_run_success", "1 when the connection's latest run ended ok",
                                   labels=["connection", "kind", "status"])
        duration = GaugeMetricFamily("desksync_last_run_duration_seconds", "Length of the connection's latest run",
                                     labels=labels)
        requests = GaugeMetricFamily("desksync_last_run_requests", "Requests of the connection's latest run",
                                     labels=labels)
        waits = GaugeMetricFamily("desksync_last_run_rate_limit_wait_seconds",
                                  "Wall-clock seconds the latest run waited on rate limits", labels=labels)
        held = GaugeMetricFamily("desksync_held_rows", "Rows a push could not send (the remote's error kept)",
                                 labels=labels)
        conflicts = GaugeMetricFamily("desksync_open_conflicts", "Conflicts waiting for a choice", labels=labels)
        runs_total = GaugeMetricFamily("desksync_runs", "Runs so far, by outcome", labels=["connection", "status"])
        run_requests = GaugeMetricFamily("desksync_run_requests", "Requests of the runs so far, by their outcome",
                                         labels=["connection", "status"])
        blocked = GaugeMetricFamily("desksync_rate_limit_blocked_until_timestamp_seconds",
                                    "An account's rate-limit block, until when (Unix time)",
                                    labels=["connection", "budget"])
        for name, info in self.report["connections"].items():
            run = info["last_run"]
            if run is not None:
                run_ok.add_metric([name, run["kind"], run["status"]], 1.0 if run["status"] == "ok" else 0.0)
                started, finished = _seconds(run["started_at"]), _seconds(run["finished_at"])
                if started is not None and finished is not None:
                    duration.add_metric([name], finished - started)
                requests.add_metric([name], float(run["requests"] or 0))
                waits.add_metric([name], float(run["rate_limit_wait_seconds"] or 0))
            for status, counted in info["runs_by_status"].items():
                runs_total.add_metric([name, status], float(counted["runs"]))
                run_requests.add_metric([name, status], float(counted["requests"]))
            held.add_metric([name], float(len(info["held"])))
            conflicts.add_metric([name], float(info["open_conflicts"]))
            for block in info["blocks"]:
                until = _seconds(block["blocked_until"])
                if until is not None and until > self.now:
                    blocked.add_metric([name, block["budget"]], until)
        yield from (run_ok, duration, requests, waits, runs_total, run_requests, held, conflicts, blocked)

    def _jobs(self) -> Iterator[GaugeMetricFamily]:
        labels = ["job", "connection"]
        failures = GaugeMetricFamily("desksync_job_consecutive_failures", "Failed runs in a row", labels=labels)
        job_success = GaugeMetricFamily("desksync_job_last_success_timestamp_seconds",
                                        "When the job's latest successful run started (Unix time)", labels=labels)
        waiting = GaugeMetricFamily("desksync_job_task_waiting_seconds",
                                    "How long the job's task has waited for a worker ([executor]; 0: none waits)",
                                    labels=labels)
        for job, info in self.report.get("jobs", {}).items():
            failures.add_metric([job, info["connection"]], float(info["consecutive_failures"]))
            task = info.get("task")
            queued = task is not None and task["status"] == "queued"
            waiting.add_metric([job, info["connection"]],
                               max(0.0, self.now - (_seconds(task["queued_at"]) or self.now)) if queued else 0.0)
            last = _seconds(info["last_success_started_at"])
            if last is not None:
                job_success.add_metric([job, info["connection"]], last)
        yield from (failures, job_success, waiting)


def prometheus_text(report: dict[str, Any], pipelines: dict[str, dict[str, Any]] | None = None,
                    now: datetime | None = None) -> bytes:
    """The report in Prometheus' text format (0.0.4), for /metrics or a textfile collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReportCollector(report, pipelines or {}, now or datetime.now(UTC)))
    return generate_latest(registry)
