"""Monitoring: /metrics (parsed with prometheus-client's own parser) and `status --prometheus` say
what `status --json` says; /healthz gives the `status --check` verdict; off loopback a token is
required."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from etl.cli import main
from etl.config import load_config
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.console.app import build_app, console_token
from etl.core.errors import ConfigError
from etl.core.simulators.http_server import AppServer
from tests.conftest import API_KEY_ENV, connection_settings, write_config_file


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_and_healthz_say_what_status_says(sqlite_url: str, simulator: Any, tmp_path: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server = simulator(Sizes(tickets=30, users=10, organizations=2, kb_articles=3))
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    monkeypatch.setenv("DESKSYNC_TEST_WRONG_KEY", "wrong")
    path = write_config_file(tmp_path / "c.toml", sqlite_url, {
        "helpdesk": connection_settings(server),
        "broken": connection_settings(server, api_key_env="DESKSYNC_TEST_WRONG_KEY")})
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(path), "init"]).exit_code == 0
    runner.invoke(main, ["--config", str(path), "sync"])
    report = json.loads(runner.invoke(main, ["--config", str(path), "status", "--json"]).output)
    assert report["healthy"] is False

    console = AppServer(build_app(load_config(str(path))), "", name="console").start()
    try:
        metrics = httpx.get(f"{console.base}/metrics")
        health = httpx.get(f"{console.base}/healthz")
    finally:
        console.server.should_exit = True
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(metrics.text)
    assert samples[("desksync_healthy", ())] == 0.0
    for name, info in report["connections"].items():
        for stream, s in info["streams"].items():
            labels = (("connection", name), ("stream", stream))
            assert samples[("desksync_stream_rows", labels)] == s["rows"]
            assert samples[("desksync_stream_deleted_rows", labels)] == s["deleted_rows"]
            assert samples[("desksync_stream_failing", labels)] == (1.0 if s["last_error"] else 0.0)
        assert samples[("desksync_held_rows", (("connection", name),))] == len(info["held"])
        assert samples[("desksync_open_conflicts", (("connection", name),))] == info["open_conflicts"]
        for status, counted in info["runs_by_status"].items():
            labels = (("connection", name), ("status", status))
            assert samples[("desksync_runs", labels)] == counted["runs"]
            assert samples[("desksync_run_requests", labels)] == counted["requests"]
        run = info["last_run"]
        assert samples[("desksync_last_run_requests", (("connection", name),))] == run["requests"]
        key = ("desksync_last_run_success", (("connection", name), ("kind", run["kind"]), ("status", run["status"])))
        assert samples[key] == (1.0 if run["status"] == "ok" else 0.0)
    assert samples[("desksync_stream_rows", (("connection", "helpdesk"), ("stream", "tickets")))] == 30
    assert health.status_code == 503 and "UNHEALTHY connection broken: last sync run failed" in health.text

    textfile = runner.invoke(main, ["--config", str(path), "status", "--prometheus"]).output
    from_cli = {k: v for k, v in _samples(textfile).items() if "freshness" not in k[0]}
    from_http = {k: v for k, v in samples.items() if "freshness" not in k[0]}
    assert from_cli == from_http


def test_off_loopback_the_console_wants_a_token(sqlite_url: str, simulator: Any, tmp_path: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert console_token("127.0.0.1", None) is None
    with pytest.raises(ConfigError, match="--token-env"):
        console_token("0.0.0.0", None)
    monkeypatch.setenv("DESKSYNC_TEST_CONSOLE_TOKEN", "s3cret-token")
    token = console_token("0.0.0.0", "DESKSYNC_TEST_CONSOLE_TOKEN")
    server = simulator(Sizes(tickets=3, users=3, organizations=1, kb_articles=1))
    path = write_config_file(tmp_path / "c.toml", sqlite_url, {"helpdesk": connection_settings(server)})
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(path), "init"]).exit_code == 0
    console = AppServer(build_app(load_config(str(path)), token), "", name="console").start()
    try:
        assert httpx.get(f"{console.base}/metrics").status_code == 401
        assert httpx.get(f"{console.base}/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 401
        answer = httpx.get(f"{console.base}/healthz", headers={"Authorization": "Bearer s3cret-token"})
        assert answer.status_code == 200 and answer.text == "ok\n"
    finally:
        console.server.should_exit = True
