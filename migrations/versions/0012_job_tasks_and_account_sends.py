"""job_tasks, account_sends, sync_runs.task_id: jobs run by Celery workers on several machines

`job_tasks` records every job the scheduler sends to the workers (queued, taken by which worker,
how it ended); `sync_runs.task_id` ties a run to the task that ran it. `account_sends` hands an
account's recent requests from the process that held its lease to the next one, so that a budget
spent on one machine is not spent again on another.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('job_tasks',
    sa.Column('task_id', sa.String(length=64), nullable=False),
    sa.Column('job', sa.String(length=64), nullable=False),
    sa.Column('connection', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('task_id', name=op.f('pk_job_tasks'))
    )
    op.create_index(op.f('ix_job_tasks_job'), 'job_tasks', ['job'], unique=False)
    op.create_table('account_sends',
    sa.Column('connection', sa.String(length=64), nullable=False),
    sa.Column('budget', sa.String(length=32), nullable=False),
    sa.Column('sent', JSON, nullable=False),
    sa.Column('holder', sa.String(length=255), nullable=False),
    sa.Column('saved_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('connection', 'budget', name=op.f('pk_account_sends'))
    )
    with op.batch_alter_table('sync_runs') as batch:
        batch.add_column(sa.Column('task_id', sa.String(length=64), nullable=True))
        batch.create_index(batch.f('ix_sync_runs_task_id'), ['task_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sync_runs') as batch:
        batch.drop_index(batch.f('ix_sync_runs_task_id'))
        batch.drop_column('task_id')
    op.drop_table('account_sends')
    op.drop_index(op.f('ix_job_tasks_job'), table_name='job_tasks')
    op.drop_table('job_tasks')
