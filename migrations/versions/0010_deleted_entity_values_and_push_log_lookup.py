"""udesk_km_entity_values.is_deleted; push_log indexed by the row a write was for

A KM entity deleted remotely was flagged, its values were not: they read as live to anyone
querying the values table alone. And every create now reads its row's push_log history (which
intent is still unanswered, etl.core.push.journal.earlier_intents): an index on (connection, table,
record id) keeps that a lookup as the log grows.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('udesk_km_entity_values') as batch:
        batch.add_column(sa.Column('is_deleted', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index('ix_push_log_record', 'push_log', ['connection', 'table_name', 'record_id'])


def downgrade() -> None:
    op.drop_index('ix_push_log_record', table_name='push_log')
    with op.batch_alter_table('udesk_km_entity_values') as batch:
        batch.drop_column('is_deleted')
