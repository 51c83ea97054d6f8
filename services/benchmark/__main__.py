"""Runs the benchmark service. Its RPCs answer UNIMPLEMENTED until the issue that builds them lands."""

import grpc

from services.common.entrypoint import run
from workbench.v1 import benchmark_pb2, benchmark_pb2_grpc


def register(server: grpc.Server) -> list[str]:
    benchmark_pb2_grpc.add_BenchmarkServiceServicer_to_server(benchmark_pb2_grpc.BenchmarkServiceServicer(), server)
    return [benchmark_pb2.DESCRIPTOR.services_by_name["BenchmarkService"].full_name]


if __name__ == "__main__":
    run("benchmark", register)
