"""several robots: jobs.robot, one dispatch control row per robot, per-robot indexes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = sa.text("dispatched_at IS NULL")
DISPATCHED = sa.text("dispatched_at IS NOT NULL")


def upgrade() -> None:
    # Existing jobs belong to the one robot there was, ``default``. A plain ADD COLUMN with
    # a default on both engines: batch mode would recreate (drop) jobs, whose DROP cascades
    # to every item, event and key (see 0004).
    op.add_column(
        "jobs",
        sa.Column("robot", sa.String(length=40), server_default="default", nullable=False),
    )
    op.drop_index("ix_jobs_queue", table_name="jobs")
    op.create_index(
        "ix_jobs_robot_queue",
        "jobs",
        ["robot", sa.text("priority DESC"), "created_at", "id", "status"],
        unique=False,
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    op.create_index(
        "ix_jobs_robot_active",
        "jobs",
        ["robot", "status"],
        unique=False,
        postgresql_where=DISPATCHED,
        sqlite_where=DISPATCHED,
    )
    # The control row becomes one row per robot, keyed by its name: row 1 is ``default``'s.
    # The table is tiny and nothing refers to it, so it is rebuilt on both engines.
    with op.batch_alter_table("dispatch_control", recreate="always") as batch_op:
        batch_op.add_column(
            sa.Column("robot", sa.String(length=40), server_default="default", nullable=False)
        )
        batch_op.drop_constraint("pk_dispatch_control", type_="primary")
        batch_op.drop_column("id")
        batch_op.create_primary_key("pk_dispatch_control", ["robot"])


def downgrade() -> None:
    # Only ``default``'s row survives: the other robots' pauses cannot be kept on one row.
    op.execute(sa.text("DELETE FROM dispatch_control WHERE robot <> 'default'"))
    with op.batch_alter_table("dispatch_control", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("id", sa.Integer(), server_default="1", nullable=False))
        batch_op.drop_constraint("pk_dispatch_control", type_="primary")
        batch_op.drop_column("robot")
        batch_op.create_primary_key("pk_dispatch_control", ["id"])
    op.drop_index("ix_jobs_robot_active", table_name="jobs")
    op.drop_index("ix_jobs_robot_queue", table_name="jobs")
    op.create_index(
        "ix_jobs_queue",
        "jobs",
        [sa.text("priority DESC"), "created_at", "id", "status"],
        unique=False,
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    op.drop_column("jobs", "robot")
