"""eddydesk_user_status_log: users' status history (GET /users/{user_id}/statuses_log/)

An optional stream (`user_statuses_log`): a user that changed is queued for it like for its
notes, and its history is read from its newest mirrored entry on.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('eddydesk_user_status_log',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('status_id', sa.String(length=64), nullable=True),
    sa.Column('name', JSON, nullable=True),
    sa.Column('name_display', sa.Text(), nullable=True),
    sa.Column('date_created', sa.DateTime(timezone=True), nullable=True),
    sa.Column('connection', sa.String(length=64), nullable=False),
    sa.Column('raw', JSON, nullable=False),
    sa.Column('content_hash', sa.String(length=32), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('remote_updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('is_deleted', sa.Boolean(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_run_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('user_id', 'id', 'connection', name=op.f('pk_eddydesk_user_status_log'))
    )


def downgrade() -> None:
    op.drop_table('eddydesk_user_status_log')
