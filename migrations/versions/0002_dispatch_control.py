"""robot capacity and dispatch control: job priority, last event, queue index, control row

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = sa.text("dispatched_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_jobs_queue",
        "jobs",
        [sa.text("priority DESC"), "created_at", "id", "status"],
        unique=False,
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    control = op.create_table(
        "dispatch_control",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_by", sa.String(length=16), nullable=True),
        sa.Column("failures_in_a_row", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_control")),
    )
    # CURRENT_TIMESTAMP is UTC on both engines (naive on SQLite, as UTCDateTime stores it).
    op.execute(
        control.insert().values(
            id=1, paused=False, failures_in_a_row=0, updated_at=sa.func.current_timestamp()
        )
    )


def downgrade() -> None:
    op.drop_table("dispatch_control")
    op.drop_index("ix_jobs_queue", table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("parked_at")
        batch_op.drop_column("last_event_at")
        batch_op.drop_column("priority")
