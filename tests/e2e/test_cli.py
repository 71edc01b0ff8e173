"""The command line as a newcomer uses it: demo, init, sync, status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import sqlalchemy as sa
from click.testing import CliRunner

from etl.cli import main
from etl.simulators.eddydesk.data import Sizes
from tests.conftest import API_KEY_ENV, connection_settings, write_config_file


def test_demo_runs_end_to_end_without_an_account(tmp_path):
    database = tmp_path / "demo.sqlite"
    result = subprocess.run([sys.executable, "-m", "etl.cli", "demo", "--database", str(database)],
                            capture_output=True, text=True, timeout=300, env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "first sync: ok" in result.stdout and "incremental sync with --reconcile: ok" in result.stdout
    assert "rate-limit rejections by the simulator: 0" in result.stdout
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets")).scalar_one() == 1005


def test_init_sync_and_status_json(sqlite_url, simulator, tmp_path, monkeypatch):
    server = simulator(Sizes(tickets=45, users=20, organizations=2, kb_articles=4))
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    path = write_config_file(tmp_path / "desksync.toml", sqlite_url, {"helpdesk": connection_settings(server)})
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(path), "init"]).exit_code == 0
    synced = runner.invoke(main, ["--config", str(path), "sync", "helpdesk"])
    assert synced.exit_code == 0, synced.output
    assert "helpdesk: ok" in synced.output
    status = runner.invoke(main, ["--config", str(path), "status", "--json"])
    report = json.loads(status.output)["connections"]["helpdesk"]
    assert report["streams"]["tickets"]["rows"] == 45 and report["streams"]["tickets"]["cursor"]
    assert report["last_run"]["status"] == "ok"
    unknown = runner.invoke(main, ["--config", str(path), "sync", "helpdesk", "--stream", "nope"])
    assert unknown.exit_code == 1 and "unknown stream 'nope'" in unknown.output
