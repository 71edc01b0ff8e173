"""The health verdict of a status report (`etl.core.run.jobs.status`): what `status --check`, /healthz and
the `desksync_healthy` metric say, computed in one place."""

from __future__ import annotations

from typing import Any


def problems_of(report: dict[str, Any]) -> list[str]:
    """Every health problem of a status report, one line each; none means healthy."""
    problems = [f"job {name}: {p}" for name, info in report.get("jobs", {}).items() for p in info["problems"]]
    problems += [f"connection {name}: {p}" for name, info in report["connections"].items() for p in info["problems"]]
    return problems
