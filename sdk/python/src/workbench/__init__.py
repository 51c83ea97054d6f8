"""Workbench client SDK: a typed client over the generated gRPC stubs (workbench.v1), and the `workbench` CLI."""

from workbench.client import JobFailedError, WorkbenchClient, WorkbenchError

__all__ = ["JobFailedError", "WorkbenchClient", "WorkbenchError"]
