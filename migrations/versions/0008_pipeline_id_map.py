"""pipeline id map (pipeline_links)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('pipeline_links',
    sa.Column('source_connection', sa.String(length=64), nullable=False),
    sa.Column('source_object', sa.String(length=64), nullable=False),
    sa.Column('source_id', sa.String(length=128), nullable=False),
    sa.Column('target_connection', sa.String(length=64), nullable=False),
    sa.Column('target_table', sa.String(length=64), nullable=False),
    sa.Column('target_id', sa.BigInteger(), nullable=True),
    sa.Column('pipeline', sa.String(length=64), nullable=False),
    sa.Column('step', sa.String(length=64), nullable=False),
    sa.Column('sent_hash', sa.String(length=32), nullable=True),
    sa.Column('sent_values', JSON, nullable=True),
    sa.Column('folded_into', sa.String(length=128), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source_connection', 'source_object', 'source_id', 'target_connection', 'target_table',
                            name=op.f('pk_pipeline_links'))
    )
    op.create_index('ix_pipeline_links_target', 'pipeline_links', ['target_connection', 'target_table', 'target_id'])


def downgrade() -> None:
    op.drop_index('ix_pipeline_links_target', table_name='pipeline_links')
    op.drop_table('pipeline_links')
