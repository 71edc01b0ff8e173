"""The fourth connector, through the engine and real HTTP: an incremental pull, a pull killed
(SIGKILL) and started again, and a local edit pushed back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import tomli_w

from etl.config import load_config
from etl.core.config import Config
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.connectors.notes.models import NOTES
from tests.connectors.notes.simulator import DATE, TOKEN, NotesState, serve

TOKEN_ENV = "DESKSYNC_TEST_NOTES_TOKEN"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def notes() -> Iterator[NotesState]:
    state = NotesState()
    server = serve(state)
    try:
        yield state
    finally:
        state.resume()
        server.stop()


def _config_file(tmp_path: Path, url: str, notes: NotesState, **settings: Any) -> Path:
    path = tmp_path / "desksync.toml"
    path.write_text(tomli_w.dumps({
        "connector_modules": ["tests.connectors.notes.connector"],
        "mirror": {"url": url},
        "log": {"level": "info", "json": True},
        "connections": {"notes": {"system": "notes", "base_url": notes.url,
                                  "token_env": TOKEN_ENV, "lookback_seconds": 1, **settings}},
    }))
    return path


def _config(tmp_path: Path, url: str, notes: NotesState, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Config:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = load_config(_config_file(tmp_path, url, notes, **settings))
    jobs.init(config)
    return config


def _mirror(url: str) -> dict[int, tuple[str, str]]:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(NOTES.c.id, NOTES.c.title, NOTES.c.body).where(
                NOTES.c.connection == "notes", NOTES.c.is_deleted.is_(False))).all()
    finally:
        engine.dispose()
    return {row.id: (row.title, row.body) for row in rows}


def _remote(notes: NotesState) -> dict[int, tuple[str, str]]:
    return {note["id"]: (note["title"], note["body"]) for note in notes.notes.values()}


def test_notes_pull_incrementally(db_url: str, notes: NotesState, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    notes.seed(130)
    config = _config(tmp_path, db_url, notes, monkeypatch)
    first = jobs.sync(config, "notes")
    assert first.status == "ok", first.errors
    assert _mirror(db_url) == _remote(notes) and len(_remote(notes)) == 130

    notes.update(7, title="changed remotely")
    notes.add("a new note", "new body")
    before = notes.list_requests
    second = jobs.sync(config, "notes")
    assert second.status == "ok", second.errors
    assert _mirror(db_url) == _remote(notes)
    # only the window since the first run's cursor: the two changes, on one page
    assert (second.inserted, second.updated, second.unchanged) == (1, 1, 0)
    assert notes.list_requests - before == 1


def test_notes_pull_killed_then_restarted_is_exact(db_url: str, notes: NotesState, tmp_path: Path) -> None:
    notes.seed(400)  # 20 pages
    config = _config_file(tmp_path, db_url, notes)
    env = {**os.environ, TOKEN_ENV: TOKEN, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "etl.cli", "--config", str(config)]
    subprocess.run([*command, "init"], env=env, check=True, capture_output=True)

    notes.pause_after_pages = 8  # the scan stops answering in its middle
    first = subprocess.Popen([*command, "sync", "notes"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    assert notes.paused.wait(60), "the scan never reached the pause"
    deadline = time.monotonic() + 60
    while not _mirror(db_url) and time.monotonic() < deadline:  # the pages answered so far commit
        time.sleep(0.05)
    written = len(_mirror(db_url))
    assert 0 < written < 400
    first.send_signal(signal.SIGKILL)
    first.wait()

    notes.resume()
    engine = open_engine(db_url)
    with engine.connect() as conn:
        state = conn.execute(sa.text("SELECT state FROM sync_state WHERE stream = 'notes'")).scalar_one()
    saved_bound = (state if isinstance(state, dict) else json.loads(state))["scan"]["hi"]
    while datetime.now(UTC).strftime(DATE) <= saved_bound:  # the change falls after the saved scan's bound
        time.sleep(0.05)
    notes.update(5, title="changed while it was down")
    # the restart finishes the saved scan, then scans on to its own start
    second = subprocess.run([*command, "sync", "notes"], env=env, capture_output=True, timeout=300)
    assert second.returncode == 0, second.stderr.decode()[-3000:]
    assert _mirror(db_url) == _remote(notes)
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT status FROM sync_runs ORDER BY id")).scalars().all()
    engine.dispose()
    assert runs == ["abandoned", "ok"]


def test_notes_push_sends_a_local_edit(db_url: str, notes: NotesState, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    notes.seed(30)
    config = _config(tmp_path, db_url, notes, monkeypatch, push={"conflict_policy": "manual"})
    assert jobs.sync(config, "notes").status == "ok"
    engine = open_engine(db_url)
    with engine.begin() as conn:
        conn.execute(NOTES.update().where(NOTES.c.connection == "notes", NOTES.c.id == 5)
                     .values(title="edited in the mirror"))
        conn.execute(NOTES.insert().values(connection="notes", id=-1, title="new in the mirror"))
    engine.dispose()

    pushed = jobs.push(config, "notes")
    assert pushed.done("update") == 1
    assert pushed.failed == 1  # the new row: held with why (this connector pushes edits only)
    assert notes.notes[5]["title"] == "edited in the mirror"
    assert notes.creates == 0
    assert jobs.push(config, "notes").done("update") == 0  # nothing left to send
    assert jobs.sync(config, "notes").status == "ok"
    mirrored = _mirror(db_url)
    assert mirrored[5] == ("edited in the mirror", "body 4")
    assert {k: v for k, v in mirrored.items() if k > 0} == _remote(notes)
    held = jobs.status(config)["connections"]["notes"]["held"]
    assert [h["record_id"] for h in held] == [-1] and "edits only" in held[0]["error"]
