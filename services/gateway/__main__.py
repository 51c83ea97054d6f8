"""Runs the gateway; on start it marks jobs a previous process left running as failed."""

from services.common.entrypoint import run
from services.common.settings import Settings
from services.gateway.servicer import registrar

if __name__ == "__main__":
    settings = Settings.from_env()
    run("gateway", registrar(settings), settings)
