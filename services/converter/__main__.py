"""Runs the converter service."""

from services.common.entrypoint import run
from services.common.server import registrar_for
from services.common.settings import Settings
from services.converter.servicer import SERVICE_NAME, ConverterServicer
from workbench.v1 import converter_pb2_grpc

registrar = registrar_for(ConverterServicer, converter_pb2_grpc.add_ConverterServiceServicer_to_server, SERVICE_NAME)

if __name__ == "__main__":
    settings = Settings.from_env()
    run("converter", registrar(settings), settings)
