"""recipe events (receipts format v2): signed recipe versions and pointers, own and fetched;
publications may name them as well as receipts

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recipe_events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("pubkey", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("relay", sa.String(length=255), nullable=True),
        sa.Column("event_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipe_events")),
    )
    with op.batch_alter_table("recipe_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recipe_events_name"), ["name"], unique=False)
        batch_op.create_index("ix_recipe_events_version_kind", ["version_id", "kind"], unique=False)
    # A publication now names a receipt or a recipe event: the key to receipts goes.
    with op.batch_alter_table("publications", schema=None) as batch_op:
        batch_op.drop_constraint("fk_publications_event_id_receipts", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("publications", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_publications_event_id_receipts", "receipts", ["event_id"], ["id"]
        )
    op.drop_table("recipe_events")
