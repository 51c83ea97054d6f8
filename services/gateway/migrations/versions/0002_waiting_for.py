"""Jobs record which worker service they wait for a free slot of, so each can tell its place in line.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("waiting_for", sa.String(32)))
    op.create_index("ix_jobs_waiting_for_id", "jobs", ["waiting_for", "id"])


def downgrade():
    op.drop_index("ix_jobs_waiting_for_id", "jobs")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("waiting_for")
