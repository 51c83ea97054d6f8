"""Runs the accuracy service. Its RPCs answer UNIMPLEMENTED until the issue that builds them lands."""

import grpc

from services.common.entrypoint import run
from workbench.v1 import accuracy_pb2, accuracy_pb2_grpc


def register(server: grpc.Server) -> list[str]:
    accuracy_pb2_grpc.add_AccuracyServiceServicer_to_server(accuracy_pb2_grpc.AccuracyServiceServicer(), server)
    return [accuracy_pb2.DESCRIPTOR.services_by_name["AccuracyService"].full_name]


if __name__ == "__main__":
    run("accuracy", register)
