"""Runs the quantizer service. Its RPCs answer UNIMPLEMENTED until the issue that builds them lands."""

import grpc

from services.common.entrypoint import run
from workbench.v1 import quantizer_pb2, quantizer_pb2_grpc


def register(server: grpc.Server) -> list[str]:
    quantizer_pb2_grpc.add_QuantizerServiceServicer_to_server(quantizer_pb2_grpc.QuantizerServiceServicer(), server)
    return [quantizer_pb2.DESCRIPTOR.services_by_name["QuantizerService"].full_name]


if __name__ == "__main__":
    run("quantizer", register)
