"""Alembic environment: migrations run on the engine or connection desksync hands over."""

from __future__ import annotations

from alembic import context

import etl.connectors.eddydesk.models  # noqa: F401  (registers the tables on the metadata)
import etl.connectors.udesk.knowledge.models  # noqa: F401
import etl.connectors.udesk.servicego.models  # noqa: F401
import etl.core.mirror.meta  # noqa: F401
from etl.core.mirror.base import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        engine = context.config.attributes.get("engine")
        if engine is None:
            from etl.core.mirror.db import open_engine

            engine = open_engine(context.config.get_main_option("sqlalchemy.url") or "sqlite:///desksync.sqlite")
        with engine.begin() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
