"""Projects: a model, a dataset and a target device; optimized models become child projects."""

from __future__ import annotations

import sqlalchemy as sa

from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from services.gateway import db as schema
from services.gateway.db import Database
from services.gateway.jobs import JobManager, now
from services.gateway.records import Records, validate_id, validate_request_id
from workbench.v1 import gateway_pb2

MAX_NAME = 200


def validate_name(name: str, required: bool = True) -> str:
    name = name.strip()
    if (required and not name) or len(name) > MAX_NAME:
        raise InvalidArgument(f"name is required, at most {MAX_NAME} characters" if required
                              else f"name is at most {MAX_NAME} characters", field="name")
    return name


def _project_columns(project: gateway_pb2.Project) -> dict:
    return {"parent_id": project.parent_id or None, "model_id": project.model_id or None,
            "dataset_id": project.dataset_id or None, "request_id": project.request_id or None}


class Catalog:
    """The records the gateway keeps: models, datasets and projects."""

    def __init__(self, database: Database, jobs: JobManager):
        self.jobs = jobs
        self.models: Records[gateway_pb2.Model] = Records(database, schema.models, "mdl", gateway_pb2.Model)
        self.datasets: Records[gateway_pb2.Dataset] = Records(database, schema.datasets, "dst", gateway_pb2.Dataset)
        self.projects: Records[gateway_pb2.Project] = Records(
            database, schema.projects, "prj", gateway_pb2.Project, _project_columns)

    def create_project(self, request: gateway_pb2.CreateProjectRequest) -> gateway_pb2.Project:
        name = validate_name(request.name)
        validate_request_id(request.request_id)
        if request.model_id:
            self.models.get(request.model_id, "model_id")
        if request.dataset_id:
            self.datasets.get(request.dataset_id, "dataset_id")
        project = gateway_pb2.Project(
            id=self.projects.new_id(), name=name, model_id=request.model_id, dataset_id=request.dataset_id,
            device=request.device or "CPU", request_id=request.request_id, create_time=now(),
        )
        if request.HasField("accuracy_settings"):
            project.accuracy_settings.CopyFrom(request.accuracy_settings)
        try:  # insert first: a retried request_id is the rare case, and the unique key settles races
            return self.projects.insert(project)
        except sa.exc.IntegrityError:  # the request_id is taken: return what the first call made
            existing = self.projects.find(request_id=request.request_id)
            if existing is None:
                raise
            return existing

    def delete_model(self, model_id: str) -> None:
        self.models.get(model_id, "model_id")
        users = self.projects.ids(model_id=model_id)
        if users:
            raise FailedPrecondition(f"model {model_id} is used by projects {', '.join(users)}", field="model_id")
        self.models.delete(model_id)

    def list_projects(self, page_size: int, page_token: str, parent_id: str, newest_first: bool = True
                      ) -> tuple[list[gateway_pb2.Project], str]:
        if parent_id:
            validate_id(parent_id, "parent_id", "prj")
        return self.projects.list(page_size, page_token, newest_first, parent_id=parent_id or None)

    def delete_project(self, project_id: str) -> None:
        self.projects.get(project_id, "project_id")
        children = self.projects.ids(parent_id=project_id)
        if children:
            raise FailedPrecondition(
                f"project {project_id} has child projects {', '.join(children)}; delete them first", field="project_id"
            )
        active = self.jobs.active(project_id)
        if active:
            raise FailedPrecondition(
                f"project {project_id} has running jobs {', '.join(active)}; cancel them first", field="project_id"
            )
        self.projects.delete(project_id)
