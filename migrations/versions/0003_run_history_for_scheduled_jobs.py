"""run history for scheduled jobs: job name, host and pid, records read

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sync_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('host', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('pid', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('records_read', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_sync_runs_job'), ['job'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sync_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sync_runs_job'))
        batch_op.drop_column('records_read')
        batch_op.drop_column('pid')
        batch_op.drop_column('host')
        batch_op.drop_column('job')
