"""task queue index: lets task assignment walk open tasks by fill level and age without sorting them all

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 08:51:28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_queue", ["n_done", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_queue")
