"""ServiceGo related records and record relations (optional streams)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('servicego_related',
    sa.Column('connection', sa.String(length=64), nullable=False),
    sa.Column('parent_object', sa.String(length=64), nullable=False),
    sa.Column('parent_id', sa.BigInteger(), nullable=False),
    sa.Column('object_name', sa.String(length=64), nullable=False),
    sa.Column('record_id', sa.BigInteger(), nullable=False),
    sa.Column('record', JSON, nullable=False),
    sa.Column('last_run_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('connection', 'parent_object', 'parent_id', 'object_name', 'record_id',
                            name=op.f('pk_servicego_related'))
    )
    op.create_table('servicego_relations',
    sa.Column('connection', sa.String(length=64), nullable=False),
    sa.Column('object_name', sa.String(length=64), nullable=False),
    sa.Column('major_id', sa.BigInteger(), nullable=False),
    sa.Column('data_id', sa.BigInteger(), nullable=False),
    sa.Column('relation_id', sa.BigInteger(), nullable=False),
    sa.Column('relation_name', sa.Text(), nullable=True),
    sa.Column('data_name', sa.Text(), nullable=True),
    sa.Column('field_values', JSON, nullable=True),
    sa.Column('last_run_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('connection', 'object_name', 'major_id', 'data_id', 'relation_id',
                            name=op.f('pk_servicego_relations'))
    )


def downgrade() -> None:
    op.drop_table('servicego_relations')
    op.drop_table('servicego_related')
