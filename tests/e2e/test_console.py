"""The console in a real headless Chromium (Debian's, driven by Playwright): the overview lists
every stream with its freshness and marks the unhealthy connection; the runs and budget charts
draw one mark per run (per minute); resolving a conflict on the page makes the next push send
exactly that value; a read-only console refuses actions. Screenshots of each page are written to
$DESKSYNC_SCREENSHOTS (or the test's temporary folder)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from etl.config import parse_config
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.console.app import build_app
from etl.core.errors import AuthError
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from etl.core.simulators.http_server import AppServer
from tests.conftest import API_KEY_ENV, connection_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as this machine's probe starts it: no sandbox (root), and nothing reaching for the network
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing (.ci/run installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield launched
        launched.close()


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DESKSYNC_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_console_shows_the_mirror_and_settles_a_conflict(sqlite_url: str, simulator: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, browser: Any) -> None:
    server = simulator(Sizes(tickets=40, users=15, organizations=3, kb_articles=4))
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    monkeypatch.setenv("DESKSYNC_TEST_WRONG_KEY", "wrong")
    config = parse_config({
        "mirror": {"url": sqlite_url},
        "connections": {
            # the documented budget, so that the budget chart's marks stand against a real limit
            "helpdesk": connection_settings(server, push={"tickets": {"conflict_policy": "manual"}},
                                            rate_limit={"per_minute": 300, "knowledge_base_per_minute": 60}),
            "broken": connection_settings(server, api_key_env="DESKSYNC_TEST_WRONG_KEY")},
        "jobs": {"pull": {"connection": "helpdesk", "every_seconds": 60, "max_lag_minutes": 30}},
    }, base_dir=tmp_path)
    jobs.init(config)
    assert jobs.sync(config, "helpdesk").status == "ok"
    engine = open_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE eddydesk_tickets SET title = 'Local title' WHERE id = 8"))
    server.state.update_ticket(8, title="Remote title")
    assert jobs.sync(config, "helpdesk").status == "ok"  # meets the local edit: a conflict (manual)
    with pytest.raises(AuthError):
        jobs.sync(config, "broken")
    shots = _shots(tmp_path)

    console = AppServer(build_app(config, allow_actions=True), "", name="console").start()
    read_only = AppServer(build_app(config), "", name="console-read-only").start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{console.base}/")
        assert page.locator("#verdict").inner_text() == "UNHEALTHY"
        headings = page.locator("h2").all_inner_texts()
        assert headings[0].startswith("broken") and "unhealthy" in headings[0], "the unhealthy connection first"
        broken = page.locator("#connection-broken + table tr.stream")
        assert broken.count() > 0 and broken.count() == page.locator("#connection-broken + table tr.stream.unhealthy").count()
        assert page.locator("#connection-helpdesk + table tr.stream.unhealthy").count() == 0
        streams = jobs.status(config)["connections"]["helpdesk"]["streams"]
        listed = page.locator("#connection-helpdesk + table tr.stream").evaluate_all(
            "rows => rows.map(r => r.dataset.stream)")
        assert sorted(listed) == sorted(streams)
        tickets_row = page.locator("#connection-helpdesk + table tr[data-stream=tickets]").inner_text()
        assert "30 min" in tickets_row and "never" not in tickets_row, "freshness against max_lag_minutes"
        page.screenshot(path=str(shots / "overview.png"), full_page=True)

        page.goto(f"{console.base}/runs")
        history = page.locator("table.runs tr").count() - 1
        assert history == 3  # two pulls of helpdesk, the failed one of broken
        # which machine and process ran each run (workers on several machines write one history)
        assert f"{socket.gethostname()} pid {os.getpid()}" in page.locator("table.runs").inner_text()
        for chart in page.locator("svg.chart").all():
            assert chart.locator("rect.mark").count() == history, "one mark a run"
        assert page.locator("svg.chart rect.mark.failed").count() == 3, "the failed run marked in each chart"
        page.screenshot(path=str(shots / "runs.png"), full_page=True)
        page.goto(f"{console.base}/runs?kind=push")
        assert page.locator("table.runs tr").count() == 1, "filtered by kind"

        page.goto(f"{console.base}/budget")
        assert page.locator("svg.chart").count() == 2 and page.locator("svg.chart line.limit").count() == 2
        assert page.locator("svg.chart").first.locator("rect.mark").count() == 3 * 60 + 1, "one mark a minute"
        page.screenshot(path=str(shots / "budget.png"), full_page=True)

        page.goto(f"{console.base}/changes")
        assert page.locator("table.changes tr").count() > 1
        page.screenshot(path=str(shots / "changes.png"), full_page=True)
        page.goto(f"{console.base}/held")
        page.screenshot(path=str(shots / "held.png"), full_page=True)

        page.goto(f"{console.base}/conflicts")
        row = page.locator("tr[data-conflict]")
        assert row.count() == 1 and "Local title" in row.inner_text() and "Remote title" in row.inner_text()
        page.screenshot(path=str(shots / "conflicts.png"), full_page=True)
        row.locator("button[value=local]").click()
        page.wait_for_url(f"{console.base}/conflicts")
        assert page.locator("tr[data-conflict]").count() == 0
        pushed = jobs.push(config, "helpdesk")
        assert pushed.failed == 0
        assert server.state.tickets.records[8]["title"] == "Local title", "the value chosen on the page was sent"

        other = browser.new_page()
        other.goto(f"{read_only.base}/conflicts")
        assert "read-only" in other.locator("header").inner_text() and other.locator("button").count() == 0
        refused = httpx.post(f"{read_only.base}/conflicts/1/resolve", data={"take": "remote"})
        assert refused.status_code == 403
        assert httpx.post(f"{read_only.base}/held/helpdesk/retry").status_code == 403
    finally:
        console.server.should_exit = True
        read_only.server.should_exit = True
        engine.dispose()
