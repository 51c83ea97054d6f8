"""Runs the benchmark service."""

from services.benchmark.servicer import registrar
from services.common.entrypoint import run
from services.common.settings import Settings

if __name__ == "__main__":
    settings = Settings.from_env()
    run("benchmark", registrar(settings), settings)
