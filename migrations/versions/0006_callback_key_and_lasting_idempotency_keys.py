"""jobs.callback_key; idempotency keys outlive their job

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 23:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_idempotency_keys_job_id_jobs"


def upgrade() -> None:
    # The fingerprint of the master secret a job's dispatch was claimed under. Jobs claimed
    # before have none: their callbacks verify as before (docs/security.md).
    op.add_column("jobs", sa.Column("callback_key", sa.String(length=16), nullable=True))
    # A key stays when retention deletes its job (job_id becomes NULL) and expires on its
    # own. Only idempotency_keys is rebuilt on SQLite (batch mode): no table refers to it.
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")
        batch_op.alter_column("job_id", existing_type=sa.String(length=36), nullable=True)
        batch_op.create_foreign_key(_FK, "jobs", ["job_id"], ["id"], ondelete="SET NULL")
        # Deleting a job looks up its keys to set NULL: an index, not a scan per job.
        batch_op.create_index("ix_idempotency_keys_job_id", ["job_id"], unique=False)


def downgrade() -> None:
    # Keys whose job is gone cannot go back to a NOT NULL reference to a job.
    op.execute(sa.text("DELETE FROM idempotency_keys WHERE job_id IS NULL"))
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.drop_index("ix_idempotency_keys_job_id")
        batch_op.drop_constraint(_FK, type_="foreignkey")
        batch_op.alter_column("job_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.create_foreign_key(_FK, "jobs", ["job_id"], ["id"], ondelete="CASCADE")
    op.drop_column("jobs", "callback_key")
