"""The catalog: records as rows (filter columns + protobuf body), jobs with leases, their events and steps.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

ID = sa.String(32)


def _record(name, *columns, indexes=()):
    op.create_table(name, sa.Column("id", ID, primary_key=True), *columns,
                    sa.Column("body", sa.LargeBinary, nullable=False))
    for cols in indexes:
        op.create_index(f"ix_{name}_{'_'.join(cols)}", name, list(cols))


def upgrade():
    _record("models")
    _record("datasets")
    _record("projects", sa.Column("parent_id", ID), sa.Column("model_id", ID), sa.Column("dataset_id", ID),
            sa.Column("request_id", sa.String(128), unique=True),
            indexes=(("parent_id", "id"), ("model_id",), ("dataset_id",)))
    _record("uploads", sa.Column("request_id", sa.String(128), unique=True))
    _record("reports", sa.Column("project_id", ID, nullable=False), indexes=(("project_id", "id"),))
    _record("packages", sa.Column("project_id", ID, nullable=False), indexes=(("project_id", "id"),))
    _record("jobs",
            sa.Column("kind", sa.Integer, nullable=False),
            sa.Column("state", sa.Integer, nullable=False),
            sa.Column("project_id", ID),
            sa.Column("request_id", sa.String(128)),
            sa.Column("request", sa.LargeBinary, nullable=False),
            sa.Column("owner", sa.String(64)),
            sa.Column("lease_until", sa.Float),
            sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
            sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.Column("last_sequence", sa.Integer, nullable=False, server_default="0"),
            sa.UniqueConstraint("kind", "request_id", name="uq_jobs_kind_request_id"),
            indexes=(("state", "id"), ("project_id", "id")))
    op.create_table("job_events", sa.Column("job_id", ID, primary_key=True),
                    sa.Column("sequence", sa.Integer, primary_key=True),
                    sa.Column("body", sa.LargeBinary, nullable=False))
    op.create_table("job_steps", sa.Column("job_id", ID, primary_key=True),
                    sa.Column("name", sa.String(64), primary_key=True),
                    sa.Column("body", sa.LargeBinary, nullable=False))


def downgrade():
    for name in ("job_steps", "job_events", "jobs", "packages", "reports", "uploads", "projects", "datasets",
                 "models"):
        op.drop_table(name)
