"""Jobs keep the trace context of the request that submitted them, so their run continues its trace.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade():
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("traceparent", sa.String(64)))


def downgrade():
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("traceparent")
