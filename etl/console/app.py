"""`desksync ui`: the console, on the ASGI stack the simulators already use (Starlette, uvicorn,
Jinja2 templates in etl/console/templates; charts are server-side SVG, etl/console/charts.py).

Pages: / (overview: every connection and stream, freshness against the jobs' max_lag_minutes,
unhealthy first), /runs (history with charts, by job and kind) and /runs/{id}, /budget
(requests a minute against each account's limit, waits, blocks), /conflicts (base, local,
remote; resolve), /held (held rows and pipeline records; retry), /changes (the change log).
Monitoring: /metrics (Prometheus text format, etl.metrics) and /healthz (the `status --check`
verdict: 200 "ok" or 503 with the problems); every request reads the mirror afresh.

Read-only unless started with allow_actions (`desksync ui --allow-actions`): resolving a conflict
and retrying held rows are POSTs, refused with 403 otherwise. Bound to 127.0.0.1 unless told
otherwise; on any other address every request must carry the token named by `token_env`
(`Authorization: Bearer …`, or `?token=` for a browser's first page, kept in a cookie), read
from the environment and never printed.
"""

from __future__ import annotations

import hmac
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from etl.console import queries
from etl.console.charts import Bar, bar_chart
from etl.core.config import Config
from etl.core.errors import ConfigError, DesksyncError
from etl.core.mirror.db import ensure_current, open_engine
from etl.core.run import jobs
from etl.health import problems_of

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def console_token(host: str, token_env: str | None) -> str | None:
    """The token requests must carry: none on loopback; required (from `token_env`) elsewhere."""
    if host in LOOPBACK:
        return None
    if not token_env:
        raise ConfigError(f"ui: --host {host} is reachable from other machines: give --token-env, the name of an "
                          "environment variable holding the token every request must carry")
    token = os.environ.get(token_env)
    if not token:
        raise ConfigError(f"ui: --token-env: environment variable {token_env} is not set or empty")
    return token


_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                autoescape=True, undefined=jinja2.StrictUndefined)
BUDGET_HOURS = 3


def _lag_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def overview(config: Config, report: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """Every connection and stream with its freshness against the jobs' max_lag_minutes; the
    unhealthy ones first."""
    out = []
    for name, info in report["connections"].items():
        lags = [j.max_lag_minutes for j in config.jobs.values() if j.connection == name and j.max_lag_minutes]
        max_lag = min(lags) * 60 if lags else None
        # a failed or abandoned latest run leaves every stream it did not bring up to date behind
        failed_at = info["last_run"]["started_at"] if info["problems"] and info["last_run"] else None
        streams = []
        for stream, s in info["streams"].items():
            last = s["last_success_at"]
            lag = (now - datetime.fromisoformat(last)).total_seconds() if last else None
            stale = max_lag is not None and (lag is None or lag > max_lag)
            behind = failed_at is not None and (last is None or datetime.fromisoformat(last) < datetime.fromisoformat(failed_at))
            streams.append({**s, "name": stream, "lag": _lag_text(lag), "max_lag": _lag_text(max_lag),
                            "unhealthy": bool(s["last_error"]) or stale or behind})
        streams.sort(key=lambda s: not s["unhealthy"])
        out.append({"name": name, "streams": streams,
                    "unhealthy": bool(info["problems"]) or any(s["unhealthy"] for s in streams)})
    out.sort(key=lambda c: not c["unhealthy"])
    return out


def build_app(config: Config, token: str | None = None, allow_actions: bool = False) -> Starlette:
    engine = open_engine(config.mirror.resolved_url(config.base_dir))  # the app's, for its pages' reads

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        given = (request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                 or request.query_params.get("token") or request.cookies.get("desksync_token") or "")
        return hmac.compare_digest(given.encode(), token.encode())

    def read(what: Any) -> Any:
        ensure_current(engine)
        with engine.connect() as conn:
            return what(conn)

    def page(request: Request, template: str, title: str, **context: Any) -> Response:
        html = _TEMPLATES.get_template(template).render(title=title, page=request.url.path, actions=allow_actions,
                                                       **context)
        response = HTMLResponse(html)
        if token is not None and request.query_params.get("token"):
            response.set_cookie("desksync_token", token, httponly=True, samesite="strict")
        return response

    def guarded(handler: Any, action: bool = False) -> Any:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return PlainTextResponse("token required\n", status_code=401)
            if action and not allow_actions:
                return PlainTextResponse("read-only console: start it with --allow-actions to act\n", status_code=403)
            return await handler(request)  # type: ignore[no-any-return]

        return endpoint

    async def home(request: Request) -> Response:
        status = await run_in_threadpool(jobs.status, config)
        return page(request, "overview.html", "Overview", problems=problems_of(status),
                    connections=overview(config, status, datetime.now(UTC)))

    async def runs(request: Request) -> Response:
        job, kind = request.query_params.get("job") or None, request.query_params.get("kind") or None
        history = await run_in_threadpool(read, lambda conn: queries.runs(conn, job, kind))

        def bars(key: str) -> list[Bar]:
            return [Bar(f"run {r['id']} ({r['status']})", float(r[key] or 0), r["status"] in ("failed", "abandoned"))
                    for r in history]

        return page(request, "runs.html", "Runs", runs=history, job=job, kind=kind, jobs=sorted(config.jobs),
                    duration_chart=bar_chart("Duration per run", bars("seconds"), " s"),
                    records_chart=bar_chart("Records read per run", bars("records_read")),
                    requests_chart=bar_chart("Requests per run", bars("requests")))

    async def one_run(request: Request) -> Response:
        found = await run_in_threadpool(read, lambda conn: queries.run(conn, int(request.path_params["run_id"])))
        if found is None:
            return PlainTextResponse("no such run\n", status_code=404)
        return page(request, "run.html", f"Run {found['id']}", run=found)

    async def budget(request: Request) -> Response:
        now = datetime.now(UTC)

        def accounts(conn: Any) -> list[dict[str, Any]]:
            blocks = [b for b in queries.blocks(conn) if datetime.fromisoformat(b["blocked_until"]) > now]
            out = []
            for name, settings in config.connections.items():
                minutes = queries.requests_per_minute(conn, name, BUDGET_HOURS, now)
                limit = settings.rate_limit.per_minute
                chart = bar_chart(f"{name}: requests a minute", [Bar(m, v) for m, v in minutes], limit=limit)
                out.append({"name": name, "chart": chart, "limit": limit,
                            "waited": queries.rate_limit_waits(conn, name, now - timedelta(hours=BUDGET_HOURS)),
                            "blocks": [b for b in blocks if b["connection"] == name]})
            return out

        return page(request, "budget.html", "Rate budget", hours=BUDGET_HOURS,
                    accounts=await run_in_threadpool(read, accounts))

    async def conflicts(request: Request) -> Response:
        return page(request, "conflicts.html", "Conflicts", conflicts=await run_in_threadpool(read, queries.conflicts))

    async def resolve(request: Request) -> Response:
        # a plain form post: parsed here rather than through python-multipart for one field
        take = parse_qs((await request.body()).decode()).get("take", [""])[0]
        if take not in ("local", "remote"):
            return PlainTextResponse("take local or remote\n", status_code=400)
        try:
            await run_in_threadpool(jobs.resolve, config, int(request.path_params["conflict_id"]), str(take))
        except DesksyncError as exc:
            return PlainTextResponse(f"error: {exc}\n", status_code=400)
        return RedirectResponse("/conflicts", status_code=303)

    async def held(request: Request, message: str | None = None) -> Response:
        rows = await run_in_threadpool(read, queries.held)
        pipeline_held = await run_in_threadpool(read, queries.held_pipeline_records)
        return page(request, "held.html", "Held rows", held=rows, pipeline_held=pipeline_held, message=message,
                    held_connections=sorted({r["connection"] for r in rows}))

    async def retry(request: Request) -> Response:
        connection = request.path_params["connection"]
        try:
            pushed = await run_in_threadpool(lambda: jobs.push(config, connection, retry_failed=True))
        except DesksyncError as exc:
            return await held(request, f"error: {exc}")
        return await held(request, f"{connection}: sent {sum(o.sent for o in pushed.tables.values())}, "
                                   f"{pushed.failed} still held")

    async def changes(request: Request) -> Response:
        return page(request, "changes.html", "Changes", changes=await run_in_threadpool(read, queries.changes))

    async def metrics(request: Request) -> Response:
        from etl.metrics import prometheus_text

        status = await run_in_threadpool(jobs.status, config)
        pipelines = await run_in_threadpool(jobs.pipelines_status, config)
        return Response(prometheus_text(status, pipelines), media_type=PROMETHEUS_TEXT)

    async def healthz(request: Request) -> Response:
        problems = problems_of(await run_in_threadpool(jobs.status, config))
        if problems:
            return PlainTextResponse("".join(f"UNHEALTHY {p}\n" for p in problems), status_code=503)
        return PlainTextResponse("ok\n")

    return Starlette(routes=[
        Route("/", guarded(home)),
        Route("/runs", guarded(runs)),
        Route("/runs/{run_id:int}", guarded(one_run)),
        Route("/budget", guarded(budget)),
        Route("/conflicts", guarded(conflicts)),
        Route("/conflicts/{conflict_id:int}/resolve", guarded(resolve, action=True), methods=["POST"]),
        Route("/held", guarded(held)),
        Route("/held/{connection}/retry", guarded(retry, action=True), methods=["POST"]),
        Route("/changes", guarded(changes)),
        Route("/metrics", guarded(metrics)),
        Route("/healthz", guarded(healthz)),
    ])
