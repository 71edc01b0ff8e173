"""The Alembic migrations build exactly the models' schema, and keep the rows they rebuild."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import etl.connectors.eddydesk.models  # noqa: F401  (registers the tables on the metadata)
import etl.connectors.udesk.knowledge.models  # noqa: F401
import etl.connectors.udesk.servicego.models  # noqa: F401
import etl.core.mirror.meta  # noqa: F401
from etl.core.mirror.base import Base
from etl.core.mirror.db import SCHEMA_HEAD, _alembic_config, current_revision, open_engine, upgrade


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_the_migrations_build_the_models_schema(db_url: str) -> None:
    engine = open_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert differences == []


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_the_schema_head_a_run_checks_is_alembics_head(db_url: str) -> None:
    """Runs check the mirror's revision without importing Alembic (etl.core.mirror.db.SCHEMA_HEAD)."""
    from alembic.script import ScriptDirectory

    engine = open_engine(db_url)
    with engine.connect() as conn:
        assert current_revision(conn) is None
    head = upgrade(engine)
    assert ScriptDirectory.from_config(_alembic_config(engine)).get_current_head() == head == SCHEMA_HEAD
    with engine.connect() as conn:
        assert current_revision(conn) == SCHEMA_HEAD
    engine.dispose()


def _migrate(engine: sa.Engine, step: str, revision: str) -> None:
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, step)(cfg, revision)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_the_children_queue_keeps_every_entry_when_it_becomes_one_entry_a_parent(db_url: str) -> None:
    engine = open_engine(db_url)
    _migrate(engine, "upgrade", "0008")
    entries = {("helpdesk", "ticket_posts", 7), ("helpdesk", "ticket_comments", 7), ("helpdesk", "ticket_comments", 8),
               ("helpdesk", "user_notes", 3), ("other", "ticket_billing", 7), ("sg", "servicego/contact/relations", 2**40)}
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sync_pending_children (connection, stream, parent_id) VALUES (:c, :s, :p)"),
                     [{"c": c, "s": s, "p": p} for c, s, p in entries])

    def rows() -> set[tuple[object, ...]]:
        with engine.connect() as conn:
            return {tuple(r) for r in conn.execute(sa.text("SELECT * FROM sync_pending_children"))}

    _migrate(engine, "upgrade", "head")
    assert rows() == {("helpdesk", "tickets", 7, 0b11), ("helpdesk", "tickets", 8, 0b10), ("helpdesk", "users", 3, 1),
                      ("other", "tickets", 7, 0b1000), ("sg", "servicego/contact/relations", 2**40, 1)}
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'sync_pending_children'")).scalar_one()
        assert "WITHOUT ROWID" in sql
    _migrate(engine, "downgrade", "0008")
    assert rows() == entries
    engine.dispose()
