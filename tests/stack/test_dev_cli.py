"""`workbench-dev` (the services' local-stack tool) and `workbench` (the SDK's API client) split the commands:
each program has its own, and the old `workbench up/down/status/demo` say in one line where they went."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from services.dev.cli import build_parser as build_dev_parser
from workbench.cli import build_parser


def test_console_scripts():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")
               if e.name in ("workbench", "workbench-dev")}
    assert scripts == {"workbench": "workbench.cli:main", "workbench-dev": "services.dev.cli:main"}


def commands(parser) -> set[str]:
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return set(sub.choices)


def test_each_program_has_its_commands():
    assert commands(build_dev_parser()) == {"up", "down", "status", "demo"}
    assert not commands(build_parser()) & {"up", "down", "status", "demo"}


@pytest.mark.parametrize("argv", [["up"], ["--json", "down"], ["--address", "127.0.0.1:1", "status"],
                                  ["--token=t", "demo", "--model", "yolov4"]])
def test_the_old_commands_point_at_workbench_dev(argv):
    result = subprocess.run([sys.executable, "-m", "workbench.cli", *argv], capture_output=True, text=True,
                            timeout=60)
    command = next(a for a in argv if a in ("up", "down", "status", "demo"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"workbench: `workbench {command}` moved to the services: run `workbench-dev {command}`\n"


def test_an_option_value_is_not_taken_for_a_moved_command():
    # `--address up` is a gateway named "up", not the old command
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "--address", "up", "project", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "moved" not in result.stderr


def test_workbench_dev_help():
    result = subprocess.run([sys.executable, "-m", "services.dev", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "{up,down,status,demo}" in result.stdout
