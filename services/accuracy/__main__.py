"""Runs the accuracy service."""

from services.accuracy.servicer import registrar
from services.common.entrypoint import run
from services.common.settings import Settings

if __name__ == "__main__":
    settings = Settings.from_env()
    run("accuracy", registrar(settings), settings)
