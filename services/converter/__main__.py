"""Runs the converter service."""

from services.common.entrypoint import run
from services.common.settings import Settings
from services.converter.servicer import registrar

if __name__ == "__main__":
    settings = Settings.from_env()
    run("converter", registrar(settings), settings)
