"""Runs the converter service. Its RPCs answer UNIMPLEMENTED until the issue that builds them lands."""

import grpc

from services.common.entrypoint import run
from workbench.v1 import converter_pb2, converter_pb2_grpc


def register(server: grpc.Server) -> list[str]:
    converter_pb2_grpc.add_ConverterServiceServicer_to_server(converter_pb2_grpc.ConverterServiceServicer(), server)
    return [converter_pb2.DESCRIPTOR.services_by_name["ConverterService"].full_name]


if __name__ == "__main__":
    run("converter", register)
