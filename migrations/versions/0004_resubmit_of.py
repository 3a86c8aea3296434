"""jobs.resubmit_of: the job a job was resubmitted from

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column(
            "resubmit_of",
            sa.String(length=36),
            sa.ForeignKey("jobs.id", ondelete="SET NULL"),
            nullable=True,
        ),
        # One ALTER TABLE … ADD COLUMN … REFERENCES on both engines: SQLite cannot add a
        # constraint later, and batch mode would recreate (drop) jobs, whose DROP cascades
        # to every item, event and key under PRAGMA foreign_keys=ON. (Inline, the constraint
        # keeps the engine's own name: jobs_resubmit_of_fkey on PostgreSQL.)
        inline_references=True,
    )
    # Deleting a job (retention) looks up the jobs resubmitted from it to set NULL, and the
    # dashboard shows them: an index, not a scan of every job per deleted one.
    op.create_index("ix_jobs_resubmit_of", "jobs", ["resubmit_of"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_resubmit_of", table_name="jobs")
    # Not batch mode (see upgrade): SQLite ≥ 3.35 drops the column with its inline reference.
    op.drop_column("jobs", "resubmit_of")
