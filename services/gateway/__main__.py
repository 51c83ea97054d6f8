"""Runs the gateway; jobs a previous gateway left running are resumed once their leases run out."""

from services.common.entrypoint import run
from services.common.settings import Settings
from services.gateway.servicer import registrar

if __name__ == "__main__":
    settings = Settings.from_env()
    run("gateway", registrar(settings), settings)
