"""campaigns and gold tasks: evaluation campaigns kept apart from training tasks (with their own N per task),
and gold tasks whose known answer sits in a table of its own

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "gold_answers",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("ranks", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("task_id"),
    )
    # Plain ADD COLUMNs with constants (no table copy on a big store); the foreign key is declared in models.py and
    # enforced by the code that writes it (SQLite cannot add a constrained column without rebuilding the table).
    op.add_column("tasks", sa.Column("campaign_id", sa.Integer(), nullable=True))
    op.add_column("tasks", sa.Column("annotators", sa.Integer(), nullable=True))
    op.add_column("tasks", sa.Column("is_gold", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_tasks_campaign_id", "tasks", ["campaign_id"], unique=False)
    # MAX(annotators) from the index: the queue walks fill levels up to the largest N any task asks for.
    op.create_index("ix_tasks_annotators", "tasks", ["annotators"], unique=False)
    # The gold queue (a few rows among many): least-ranked first without touching the other tasks.
    op.create_index("ix_tasks_gold", "tasks", ["is_gold", "n_done", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tasks_gold", table_name="tasks")
    op.drop_index("ix_tasks_annotators", table_name="tasks")
    op.drop_index("ix_tasks_campaign_id", table_name="tasks")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("is_gold")
        batch_op.drop_column("annotators")
        batch_op.drop_column("campaign_id")
    op.drop_table("gold_answers")
    op.drop_table("campaigns")
