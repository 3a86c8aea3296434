"""jobs.trace_parent: the W3C traceparent of the request that submitted the job

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: jobs submitted before, or with traces off, have none.
    op.add_column("jobs", sa.Column("trace_parent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    # Not batch mode: recreating jobs would cascade its DROP to every item (see 0004).
    op.drop_column("jobs", "trace_parent")
