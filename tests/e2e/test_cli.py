"""The command line as a newcomer uses it: demo, init, sync, status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import sqlalchemy as sa
from click.testing import CliRunner

from etl.cli import main
from etl.connectors.eddydesk.simulator.data import Sizes
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


def test_version_help_and_global_options_after_the_verb(sqlite_url, simulator, tmp_path, monkeypatch):
    from importlib.metadata import version

    runner = CliRunner()
    shown = runner.invoke(main, ["--version"])
    assert shown.exit_code == 0 and shown.output.strip() == f"desksync, version {version('desksync')}"
    assert runner.invoke(main, ["-h"]).exit_code == 0 and "Commands:" in runner.invoke(main, ["-h"]).output
    assert "--allow-mass-delete" in runner.invoke(main, ["sync", "-h"]).output

    server = simulator(Sizes(tickets=5, users=5, organizations=1, kb_articles=1))
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    path = write_config_file(tmp_path / "desksync.toml", sqlite_url, {"helpdesk": connection_settings(server)})
    assert runner.invoke(main, ["init", "--config", str(path)]).exit_code == 0
    synced = runner.invoke(main, ["sync", "helpdesk", "-v", "--config", str(path)])
    assert synced.exit_code == 0 and "helpdesk: ok" in synced.output, synced.output
    assert runner.invoke(main, ["status", f"--config={path}", "--json"]).exit_code == 0


def test_status_and_runs_print_whole_lines_and_one_time_format(sqlite_url, simulator, tmp_path, monkeypatch):
    """Piped, nothing is cut at 80 columns; every moment is UTC ISO 8601 with its offset; `runs`
    says what kind of run each was."""
    import re

    server = simulator(Sizes(tickets=5, users=5, organizations=1, kb_articles=1))
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    path = write_config_file(tmp_path / "desksync.toml", sqlite_url, {"helpdesk": connection_settings(server)})
    runner = CliRunner()
    runner.invoke(main, ["--config", str(path), "init"])
    assert runner.invoke(main, ["--config", str(path), "sync"]).exit_code == 0
    text = runner.invoke(main, ["--config", str(path), "status"]).output
    assert "organization_custom_field_options" in text and "…" not in text
    report = json.loads(runner.invoke(main, ["--config", str(path), "status", "--json"]).output)
    moments: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and (key.endswith("_at") or key.endswith("_until") or key == "cursor"):
                    moments.append(value)
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(report)
    iso = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?\+00:00$")
    assert moments and all(iso.match(m) for m in moments), [m for m in moments if not iso.match(m)]
    lines = runner.invoke(main, ["--config", str(path), "runs"]).output.splitlines()
    assert lines and all(" sync " in line and any(iso.match(word) for word in line.split()) for line in lines), lines


def test_pipeline_list_names_each_pipeline(tmp_path):
    import tomli_w

    path = tmp_path / "c.toml"
    document = {"connections": {
        "a": {"system": "eddydesk", "base_url": "http://127.0.0.1:9/api/v2", "email": "a@example.com",
              "api_key_env": "X"},
        "b": {"system": "udesk_knowledge", "base_url": "http://127.0.0.1:9/open_api_v1", "email": "b@example.com",
              "api_token_env": "Y", "push": {"catalogs": {}, "questions": {}}}},
        "pipelines": {"kb": {"source": "a", "target": "b", "steps": [
            {"name": "categories", "source_table": "eddydesk_kb_categories", "target_object": "catalogs",
             "match": ["name"], "map": {"name": "{{ name }}"}}]}}}
    path.write_text(tomli_w.dumps(document))
    listed = CliRunner().invoke(main, ["pipeline", "list", "--config", str(path)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.strip() == "kb: a -> b (categories)"
