"""Runs the quantizer service."""

from services.common.entrypoint import run
from services.common.settings import Settings
from services.quantizer.servicer import registrar

if __name__ == "__main__":
    settings = Settings.from_env()
    run("quantizer", registrar(settings), settings)
