"""`desksync ui`: monitoring endpoints on the ASGI stack the simulators already use (Starlette,
uvicorn), read-only.

- /metrics: Prometheus text format (etl.metrics), every request reading the mirror afresh;
- /healthz: 200 "ok" or 503 with the problems, the verdict of `status --check`.

Bound to 127.0.0.1 unless told otherwise; on any other address every request must carry the
token named by `token_env` (`Authorization: Bearer …`), which is read from the environment and
never printed.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from etl import jobs
from etl.config import Config
from etl.errors import ConfigError
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


def build_app(config: Config, token: str | None = None) -> Starlette:
    def authorized(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())

    def report() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        pipelines = {name: jobs.pipeline_status(config, name) for name in config.pipelines}
        return jobs.status(config), pipelines

    async def metrics(request: Request) -> Response:
        if not authorized(request):
            return PlainTextResponse("token required\n", status_code=401)
        from etl.metrics import prometheus_text

        status, pipelines = await run_in_threadpool(report)
        return Response(prometheus_text(status, pipelines), media_type=PROMETHEUS_TEXT)

    async def healthz(request: Request) -> Response:
        if not authorized(request):
            return PlainTextResponse("token required\n", status_code=401)
        status, _ = await run_in_threadpool(report)
        problems = problems_of(status)
        if problems:
            return PlainTextResponse("".join(f"UNHEALTHY {p}\n" for p in problems), status_code=503)
        return PlainTextResponse("ok\n")

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz)])
