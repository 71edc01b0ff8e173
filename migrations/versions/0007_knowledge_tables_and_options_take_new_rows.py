"""Udesk knowledge and KM tables and EddyDesk custom-field options take new rows: server defaults

A user INSERTs a catalog, question, useful expression or link, KM entity or entity value, or an
EddyDesk custom-field option with a negative placeholder id and its columns only; `desksync push` creates it remotely and writes the
real record in its place. The owner (agent_id) defaults to 0, the administrator.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

TABLES = ('udesk_knowledge_catalogs', 'udesk_knowledge_questions', 'udesk_useful_expressions', 'udesk_useful_links',
          'udesk_km_entities', 'eddydesk_custom_field_options')
OWNED = TABLES[:4]


def _defaults(add: bool) -> None:
    now = sa.func.current_timestamp() if add else None
    for name in TABLES:
        with op.batch_alter_table(name) as batch_op:
            batch_op.alter_column('raw', server_default=sa.text("'{}'") if add else None)
            batch_op.alter_column('content_hash', server_default='' if add else None)
            batch_op.alter_column('first_seen_at', server_default=now)
            batch_op.alter_column('last_seen_at', server_default=now)
            batch_op.alter_column('is_deleted', server_default=sa.false() if add else None)
            if name in OWNED:
                batch_op.alter_column('agent_id', server_default='0' if add else None)
            if name == 'udesk_knowledge_catalogs':
                batch_op.alter_column('depth', server_default='0' if add else None)
                batch_op.alter_column('path', server_default='' if add else None)
    with op.batch_alter_table('udesk_km_entity_values') as batch_op:
        batch_op.alter_column('synonyms', server_default=sa.text("'[]'") if add else None)


def upgrade() -> None:
    _defaults(True)


def downgrade() -> None:
    _defaults(False)
