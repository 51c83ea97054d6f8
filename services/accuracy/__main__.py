"""Runs the accuracy service."""

from services.accuracy.servicer import SERVICE_NAME, AccuracyServicer
from services.common.entrypoint import run
from services.common.server import registrar_for
from services.common.settings import Settings
from workbench.v1 import accuracy_pb2_grpc

registrar = registrar_for(AccuracyServicer, accuracy_pb2_grpc.add_AccuracyServiceServicer_to_server, SERVICE_NAME)

if __name__ == "__main__":
    settings = Settings.from_env()
    run("accuracy", registrar(settings), settings)
