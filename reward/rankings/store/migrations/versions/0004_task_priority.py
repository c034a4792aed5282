"""task priority: the acquisition score of each task (active ranking); the queue serves the highest first

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 21:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN (SQLite allows it with a constant default): no table copy on a big store.
    op.add_column("tasks", sa.Column("priority", sa.Float(), nullable=False, server_default="0"))
    # Replaces (n_done, id): the queue walks one fill level by priority, highest first, then age.
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.create_index("ix_tasks_queue", "tasks", ["n_done", sa.text("priority DESC"), "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.create_index("ix_tasks_queue", "tasks", ["n_done", "id"], unique=False)
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("priority")
