"""automation decisions: one row per (hook, decision key), for one call per decision across episodes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:10:00

The table object is alert_bridge.db.automation_decisions.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "automation_decisions",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("hook", sa.String(length=128), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("acted_alert_id", sa.Integer(), nullable=False),
        sa.Column("acted_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("automation_decisions")
