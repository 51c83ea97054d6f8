"""Runs the benchmark service."""

from services.benchmark.servicer import SERVICE_NAME, BenchmarkServicer
from services.common.entrypoint import run
from services.common.server import registrar_for
from services.common.settings import Settings
from workbench.v1 import benchmark_pb2_grpc

registrar = registrar_for(BenchmarkServicer, benchmark_pb2_grpc.add_BenchmarkServiceServicer_to_server, SERVICE_NAME)

if __name__ == "__main__":
    settings = Settings.from_env()
    run("benchmark", registrar(settings), settings)
