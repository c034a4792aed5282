"""campaign and security: N stored with the data, one flag per person and task (with a review status),
undoable rankings, and the failed-login throttle shared by every server process

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 18:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index("ix_login_failures_at", ["at"], unique=False)
        batch_op.create_index("ix_login_failures_client", ["client", "at"], unique=False)
    # Stores from before this revision may hold repeated flags by one person on one task: keep the first.
    op.execute(
        "DELETE FROM flags WHERE id NOT IN (SELECT keep FROM (SELECT MIN(id) AS keep FROM flags "
        "GROUP BY task_id, user_id) AS firsts)"
    )
    with op.batch_alter_table("flags", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="open"))
        batch_op.create_unique_constraint("uq_flags_task_user", ["task_id", "user_id"])
    with op.batch_alter_table("rankings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revisable_until", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("revisions", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("rankings", schema=None) as batch_op:
        batch_op.drop_column("revisions")
        batch_op.drop_column("revisable_until")
    with op.batch_alter_table("flags", schema=None) as batch_op:
        batch_op.drop_constraint("uq_flags_task_user", type_="unique")
        batch_op.drop_column("status")
    op.drop_table("login_failures")
    op.drop_table("settings")
