"""The client never gets an account blocked: it stays under the limit, believes the server's
headers, slows down when another client spends the budget, and never retries into a block."""

from __future__ import annotations

import time

from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.limits import Limits
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.mirror_check import assert_mirror_matches

SMALL = Sizes(tickets=500, users=90, organizations=8, kb_categories=8, kb_articles=70)


def test_full_sync_under_scaled_limits_has_zero_rejections(sqlite_url, simulator, make_config):
    # 100 and 20 requests per one-second "minute": low enough that any machine must be paced
    server = simulator(Sizes(tickets=200, users=60, organizations=6, kb_categories=8, kb_articles=70),
                       Limits(per_minute=100, knowledge_base_per_minute=20, minute_seconds=1.0))
    config = make_config(sqlite_url, server, rate_limit={"per_minute": 100, "knowledge_base_per_minute": 20,
                                                         "window_seconds": 1.0})
    summary = jobs.sync(config, "helpdesk")
    assert summary.status == "ok", summary.errors
    assert server.limits.rejections == 0 and summary.rate_limit_rejections == 0
    assert summary.requests > 400  # several windows' worth
    # waits in wall-clock time: eight fetch threads waiting at once count once (they were summed:
    # 212.9 s of waiting reported for a 38.4 s run)
    assert 0 < summary.rate_limit_wait_seconds <= summary.seconds
    assert_mirror_matches(open_engine(sqlite_url), server.state)


def test_client_slows_down_when_the_server_reports_few_remaining(sqlite_url, simulator, make_config):
    server = simulator(Sizes(tickets=150, users=40, organizations=4, kb_articles=10),
                       Limits(per_minute=100, knowledge_base_per_minute=None, minute_seconds=3.0))
    config = make_config(sqlite_url, server, rate_limit={"per_minute": 100, "window_seconds": 3.0})
    # another client of the same account has just spent 85 of this minute's 100 requests
    server.limits.consume(server.state.admin_email, "main", 85)
    summary = jobs.sync(config, "helpdesk", ("tickets", "ticket_posts"))
    assert summary.status == "ok", summary.errors
    assert summary.requests > 100  # more than one window's worth
    assert server.limits.rejections == 0
    assert summary.rate_limit_wait_seconds > 1.0


def test_the_servers_announced_limit_wins_over_the_configured_one(sqlite_url, simulator, make_config):
    server = simulator(Sizes(tickets=150, users=40, organizations=4, kb_articles=10),
                       Limits(per_minute=40, knowledge_base_per_minute=None, minute_seconds=1.0))
    config = make_config(sqlite_url, server, concurrency=4,
                         rate_limit={"per_minute": 1000, "window_seconds": 1.0})  # configured too high
    summary = jobs.sync(config, "helpdesk", ("tickets", "ticket_posts"))
    assert summary.status == "ok", summary.errors
    assert server.limits.rejections == 0


def test_a_block_is_not_retried_into_and_is_remembered_by_the_next_run(sqlite_url, simulator, make_config):
    stopped = time.time()  # the simulator's minute must not roll over between the spending and the run
    server = simulator(SMALL, Limits(per_minute=50, knowledge_base_per_minute=None, minute_seconds=30.0,
                                     block_minutes=1.0, clock=lambda: stopped))
    config = make_config(sqlite_url, server, rate_limit={"per_minute": 50, "window_seconds": 30.0,
                                                         "block_seconds": 30.0})
    server.limits.consume(server.state.admin_email, "main", 50)  # someone else spent it all
    first = jobs.sync(config, "helpdesk")
    assert first.status == "failed"
    assert server.limits.rejections == 1, "one refusal, then no request until the block ends"
    blocked = [e for e in first.errors.values() if "blocked" in e]
    assert blocked and all("blocked" in e for e in first.errors.values() if "kb_" not in e)
    before = server.stats.requests
    second = jobs.sync(config, "helpdesk", ("tickets",))
    assert second.status == "failed" and "blocked" in second.errors["tickets"]
    assert server.stats.requests == before, "a new process must not send into a recorded block"
    status = jobs.status(config)["connections"]["helpdesk"]
    assert status["blocks"] and status["blocks"][0]["budget"] == "main"
