"""Stopping and giving up promptly: a stop during a rate-limit wait ends the run at once (the
`sync` command and the scheduler), and a host that refuses connections is given up on within
about 15 s instead of retried stream after stream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.server import SimulatorServer
from etl.core.http.session import REFUSED_GIVE_UP_SECONDS
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.conftest import API_KEY_ENV, connection_settings, write_config_file

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, API_KEY_ENV: "sim-api-key"}
# Five requests a minute: a sync needs dozens, so after its first few it waits on the budget for
# most of a minute, which is where the stop lands.
SLOW_BUDGET = {"per_minute": 5, "knowledge_base_per_minute": 5}


def _stop_during_the_wait(proc: subprocess.Popen[bytes], server: SimulatorServer) -> float:
    """SIGTERM once the budget is spent (the run is then waiting for it); seconds until the exit."""
    deadline = time.monotonic() + 60
    while server.stats.requests < 4:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the budget was never spent"
        time.sleep(0.02)
    time.sleep(0.3)  # into the wait: the next request's slot is most of a minute away
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    return time.monotonic() - sent


def test_a_sync_stops_at_once_during_a_rate_limit_wait(sqlite_url: str, simulator: Callable[..., SimulatorServer],
                                                      make_config: Callable[..., Any], tmp_path: Path) -> None:
    server = simulator(Sizes(tickets=100, users=20, organizations=2, kb_articles=2))
    make_config(sqlite_url, server)
    config = write_config_file(tmp_path / "c.toml", sqlite_url,
                               {"helpdesk": connection_settings(server, rate_limit=SLOW_BUDGET)})
    proc = subprocess.Popen([sys.executable, "-m", "etl.cli", "--config", str(config), "sync"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = _stop_during_the_wait(proc, server)
    print(f"sync stopped {took:.2f} s after SIGTERM")
    assert proc.returncode == 130
    assert took < 5, f"stopped {took:.1f} s after SIGTERM (it sat out the rate-limit wait before: 38 s)"
    with open_engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM sync_runs")).scalar_one() == "interrupted"


def test_the_scheduler_stops_at_once_during_a_rate_limit_wait(sqlite_url: str,
                                                             simulator: Callable[..., SimulatorServer],
                                                             make_config: Callable[..., Any], tmp_path: Path) -> None:
    import tomli_w

    server = simulator(Sizes(tickets=100, users=20, organizations=2, kb_articles=2))
    make_config(sqlite_url, server)
    config = write_config_file(tmp_path / "c.toml", sqlite_url,
                               {"helpdesk": connection_settings(server, rate_limit=SLOW_BUDGET)})
    with config.open("a") as f:
        f.write("\n" + tomli_w.dumps({"jobs": {"pull": {"connection": "helpdesk", "every_seconds": 60}}}))
    proc = subprocess.Popen([sys.executable, "scheduler.py", "--config", str(config)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = _stop_during_the_wait(proc, server)
    print(f"scheduler stopped {took:.2f} s after SIGTERM")
    assert proc.returncode == 0
    assert took < 5, f"stopped {took:.1f} s after SIGTERM (it sat out the rate-limit wait before: 35 s)"


def test_a_host_that_refuses_connections_is_given_up_on_quickly(sqlite_url: str,
                                                                simulator: Callable[..., SimulatorServer],
                                                                make_config: Callable[..., Any]) -> None:
    server = simulator(Sizes(tickets=5, users=5, organizations=1, kb_articles=1))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(sqlite_url, server, base_url=f"http://127.0.0.1:{port}/api/v2",
                         retry={"attempts": 6, "backoff_seconds": 0.5, "max_backoff_seconds": 30.0})
    started = time.monotonic()
    summary = jobs.sync(config, "helpdesk")
    took = time.monotonic() - started
    print(f"gave up on a closed port after {took:.1f} s, {summary.retries} retries, {summary.requests} attempts")
    assert summary.status == "failed"
    assert all("refuses connections" in e or "ConnectError" in e for e in summary.errors.values()), summary.errors
    assert took < REFUSED_GIVE_UP_SECONDS + 5, f"gave up after {took:.1f} s ({summary.retries} retries)"
    # Without the give-up every stream retried to its last attempt: 110 retries. With it, the
    # retries fit in the give-up time; their delays are random (full jitter), so their number
    # is too: about 10 on average, 30 only if six streams' worth of delays (46 s on average)
    # came under 15 s, a chance of about one in a million.
    assert summary.retries <= 30


def test_a_terminal_shows_bars_with_totals_and_the_rate_limit_wait(sqlite_url: str,
                                                                  simulator: Callable[..., SimulatorServer],
                                                                  make_config: Callable[..., Any],
                                                                  tmp_path: Path) -> None:
    """Under a pseudo-terminal: each stream's bar with done/total, and a "waiting for the rate limit
    (N s)" line while the budget is spent (ServiceGo's last 85 s of a sync showed no movement)."""
    import pty
    import select

    server = simulator(Sizes(tickets=100, users=20, organizations=2, kb_articles=2))
    make_config(sqlite_url, server)
    config = write_config_file(tmp_path / "c.toml", sqlite_url,
                               {"helpdesk": connection_settings(server, rate_limit=SLOW_BUDGET)})
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "etl.cli", "--config", str(config), "sync"], cwd=ROOT,
                            env={**ENV, "COLUMNS": "160", "TERM": "xterm"}, stdin=follower, stdout=follower,
                            stderr=follower, close_fds=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 90
    try:
        while b"waiting for the rate limit (" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    seen += os.read(leader, 65536)
                except OSError:
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        os.close(leader)
    import re

    screen = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", seen.decode(errors="replace"))  # without the terminal's codes
    assert "waiting for the rate limit (" in screen, screen[-2000:]
    assert re.search(r"departments\s.*?\b3/3\b", screen), "a bar with done/total (the seed's 3 departments)"
