"""Runs the quantizer service."""

from services.common.entrypoint import run
from services.common.server import registrar_for
from services.common.settings import Settings
from services.quantizer.servicer import SERVICE_NAME, QuantizerServicer
from workbench.v1 import quantizer_pb2_grpc

registrar = registrar_for(QuantizerServicer, quantizer_pb2_grpc.add_QuantizerServiceServicer_to_server, SERVICE_NAME)

if __name__ == "__main__":
    settings = Settings.from_env()
    run("quantizer", registrar(settings), settings)
