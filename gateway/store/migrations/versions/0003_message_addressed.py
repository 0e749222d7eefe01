"""messages remember whether they addressed the bot

A message pending at a crash is answered after the restart only if it was addressed to the
agents (a mention or a reply to the bot); an unaddressed line in a `mention` room stays
observed context, as it would have without the crash.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("addressed", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("addressed")
