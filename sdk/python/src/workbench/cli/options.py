"""Arguments several commands share."""

from __future__ import annotations

import argparse


def list_parser(subcommands) -> argparse.ArgumentParser:
    """A `list` command: newest first, like `docker ps`, unless --oldest-first."""
    parser = subcommands.add_parser("list", help="newest first")
    parser.add_argument("--oldest-first", action="store_true", help="list the oldest first")
    return parser
