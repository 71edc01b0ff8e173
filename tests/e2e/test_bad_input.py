"""Bad input gets a clear error naming what is wrong, and loses nothing."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from etl.cli import main
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.core import log
from etl.core.errors import AuthError, MirrorError
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.conftest import API_KEY_ENV, connection_settings, write_config_file
from tests.mirror_check import assert_mirror_matches

TINY = Sizes(tickets=120, users=40, organizations=5, kb_categories=5, kb_articles=12)


def test_wrong_credentials_stop_the_run_with_the_apis_error_and_no_secret(sqlite_url, simulator, make_config,
                                                                             monkeypatch):
    server = simulator(TINY)
    config = make_config(sqlite_url, server)
    monkeypatch.setenv(API_KEY_ENV, "not-the-key-123")
    with pytest.raises(AuthError) as raised:
        jobs.sync(config, "helpdesk")
    message = str(raised.value)
    assert "HTTP 401" in message and "e-401" in message and "Invalid e-mail or API key" in message
    assert "not-the-key-123" not in message
    with open_engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets")).scalar_one() == 0


def test_cli_reports_wrong_credentials_and_exits_non_zero(sqlite_url, simulator, make_config, tmp_path, monkeypatch):
    server = simulator(TINY)
    make_config(sqlite_url, server)
    path = write_config_file(tmp_path / "c.toml", sqlite_url, {"helpdesk": connection_settings(server)})
    monkeypatch.setenv(API_KEY_ENV, "wrong-key-456")
    result = CliRunner().invoke(main, ["--config", str(path), "sync"])
    assert result.exit_code == 1
    assert "e-401" in result.output and "wrong-key-456" not in result.output


def test_sync_refuses_a_database_without_the_schema(sqlite_url, simulator, make_config):
    server = simulator(TINY)
    config = make_config(sqlite_url, server, init=False)
    with pytest.raises(MirrorError, match="desksync init"):
        jobs.sync(config, "helpdesk")


def test_server_errors_html_pages_and_truncated_json_are_retried(db_url, simulator, make_config):
    server = simulator(TINY)
    config = make_config(db_url, server)
    server.queue_fault("500", 3, path="tickets/")
    server.queue_fault("html", 3, path="users/")
    server.queue_fault("truncated", 3, path="knowledge_base/")
    summary = jobs.sync(config, "helpdesk")
    assert summary.status == "ok", summary.errors
    assert summary.retries >= 9
    assert_mirror_matches(open_engine(db_url), server.state)


def test_persistent_server_errors_fail_the_stream_clearly_and_the_next_run_completes(sqlite_url, simulator,
                                                                                     make_config):
    server = simulator(TINY)
    config = make_config(sqlite_url, server)
    server.queue_fault("html", 1000, path="/tickets/")
    first = jobs.sync(config, "helpdesk")
    assert first.status == "failed"
    error = first.errors["tickets"]
    assert "gave up after 4 attempts" in error and "HTTP 502" in error and "502 Bad Gateway" in error
    assert "users" not in first.errors, "other streams go on"
    server.app.state.faults.queue.clear()
    second = jobs.sync(config, "helpdesk")
    assert second.status == "ok", second.errors
    assert_mirror_matches(open_engine(sqlite_url), server.state)


def test_an_unparseable_date_is_kept_raw_logged_and_not_fatal(sqlite_url, simulator, make_config):
    server = simulator(TINY)
    config = make_config(sqlite_url, server)
    server.state.update_ticket(7, sla_date="31.02.2020 25:61")
    buffer = io.StringIO()
    log.configure("warning", json=True, stream=buffer)
    try:
        summary = jobs.sync(config, "helpdesk", ("tickets",))
    finally:
        log.configure("warning", json=True)
    assert summary.status == "ok" and summary.problems == 1
    events = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert any(e["event"] == "field_unparseable" and e["id"] == 7 for e in events)
    with open_engine(sqlite_url).connect() as conn:
        row = conn.execute(sa.text("SELECT sla_date, raw FROM eddydesk_tickets WHERE id = 7")).one()
    assert row.sla_date is None and json.loads(row.raw)["sla_date"] == "31.02.2020 25:61"


def test_api_keys_are_neither_stored_nor_logged(sqlite_url, simulator, make_config):
    server = simulator(TINY)
    config = make_config(sqlite_url, server)
    buffer = io.StringIO()
    log.configure("debug", json=True, stream=buffer)
    try:
        jobs.sync(config, "helpdesk", ("users",))
    finally:
        log.configure("warning", json=True)
    keys = {u["api_key"] for u in server.state.users.records.values()}
    text = buffer.getvalue()
    assert '"request"' in text  # debug request lines were written
    assert not any(k in text for k in keys) and "Basic " not in text
    with open_engine(sqlite_url).connect() as conn:
        raws = conn.execute(sa.text("SELECT raw, api_key FROM eddydesk_users")).all()
    assert raws and all(r.api_key is None and "api_key" not in r.raw for r in raws)
    assert not any(k in r.raw for r in raws for k in keys)


def test_api_keys_are_stored_only_when_the_configuration_opts_in(sqlite_url, simulator, make_config):
    server = simulator(TINY)
    config = make_config(sqlite_url, server, store_api_keys=True)
    jobs.sync(config, "helpdesk", ("users",))
    with open_engine(sqlite_url).connect() as conn:
        stored: dict[Any, Any] = dict(conn.execute(sa.text("SELECT id, api_key FROM eddydesk_users")).all())
    assert stored == {uid: u["api_key"] for uid, u in server.state.users.records.items()}


def test_one_connections_bad_key_or_missing_variable_does_not_stop_the_others(sqlite_url, simulator, make_config,
                                                                               tmp_path, monkeypatch):
    """`sync` of every connection: a 401 on one and a missing variable on another are each reported
    on a line of their own (`error: <connection>: ...`), the good one still syncs, the exit status is
    1 (2 when a configuration error was among them, as for any configuration error), and health
    (`status --check`, no [jobs] table needed) says which connection failed."""
    server = simulator(TINY)
    make_config(sqlite_url, server)
    connections = {"bad_key": connection_settings(server, api_key_env="DESKSYNC_TEST_WRONG"),
                   "good": connection_settings(server)}
    path = write_config_file(tmp_path / "c.toml", sqlite_url, connections)
    monkeypatch.setenv("DESKSYNC_TEST_WRONG", "wrong-key-789")
    result = CliRunner().invoke(main, ["--config", str(path), "sync"])
    assert result.exit_code == 1, result.output
    assert "error: bad_key: " in result.output and "e-401" in result.output and "wrong-key-789" not in result.output
    assert "good: ok" in result.output
    check = CliRunner().invoke(main, ["--config", str(path), "status", "--check"])
    assert check.exit_code == 1
    assert "UNHEALTHY connection bad_key: last sync run failed" in check.output
    assert "UNHEALTHY connection good" not in check.output

    connections["missing"] = connection_settings(server, api_key_env="DESKSYNC_TEST_NOT_SET")
    path = write_config_file(tmp_path / "c2.toml", sqlite_url, connections)
    monkeypatch.delenv("DESKSYNC_TEST_NOT_SET", raising=False)
    result = CliRunner().invoke(main, ["--config", str(path), "sync"])
    assert result.exit_code == 2, result.output
    assert "error: missing: connections.missing.api_key_env: environment variable DESKSYNC_TEST_NOT_SET" in result.output
    assert "good: ok" in result.output
    with open_engine(sqlite_url).connect() as conn:
        recorded = conn.execute(sa.text("SELECT status, error FROM sync_runs WHERE connection = 'missing'")).one()
    assert recorded.status == "failed" and "DESKSYNC_TEST_NOT_SET" in recorded.error


def test_a_bad_configuration_file_exits_2_with_one_error_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[connections.h]\nsystem = "eddydesk"\nbase_url = "not a url"\n')
    result = CliRunner().invoke(main, ["--config", str(path), "sync"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and "base_url" in result.output


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("command", [["init"], ["sync"], ["status"]])
def test_a_corrupt_mirror_file_is_named_in_one_line(sqlite_url, simulator, tmp_path, command):
    server = simulator(TINY)
    path = tmp_path / "mirror.sqlite"
    path.write_bytes(b"these are not the pages of a SQLite database" * 200)
    config = write_config_file(tmp_path / "c.toml", f"sqlite:///{path}", {"helpdesk": connection_settings(server)})
    line = _one_error_line(CliRunner().invoke(main, ["--config", str(config), *command]))
    assert str(path) in line and "is not a SQLite database" in line


def test_a_mirror_in_a_missing_directory_is_named_in_one_line(simulator, tmp_path):
    server = simulator(TINY)
    path = tmp_path / "no" / "such" / "dir" / "mirror.sqlite"
    config = write_config_file(tmp_path / "c.toml", f"sqlite:///{path}", {"helpdesk": connection_settings(server)})
    line = _one_error_line(CliRunner().invoke(main, ["--config", str(config), "init"]))
    assert str(path) in line and "cannot be opened" in line and "directory" in line


def test_a_read_only_mirror_is_named_in_one_line(sqlite_url, simulator, make_config, tmp_path, monkeypatch):
    """Read-only as SQLite's own URI option says it (file permissions do not bind root, who runs CI)."""
    server = simulator(TINY)
    make_config(sqlite_url, server)
    path = sqlite_url.removeprefix("sqlite:///")
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    config = write_config_file(tmp_path / "c.toml", read_only, {"helpdesk": connection_settings(server)})
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    line = _one_error_line(CliRunner().invoke(main, ["--config", str(config), "sync"]))
    assert path in line and "is read-only" in line
