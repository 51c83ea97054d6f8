"""Every `workbench` and `workbench-dev` command line the README shows is one the CLI accepts as written.

A command the README documents but argparse refuses (`--order-by -b` read as an option) fails here; the
report commands also run for real in tests/accuracy/test_report_service.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from services.dev.cli import build_parser as build_dev_parser
from workbench.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands(program: str = "workbench") -> list[str]:
    """The README's command lines of one program: each `workbench ...` (or `workbench-dev ...`) line inside a
    fenced block, comments cut, optional parts in [brackets] taken both with and without."""
    commands, fenced = [], False
    name = re.escape(program)
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        found = re.match(rf"^\s*(?:\.venv/bin/)?{name}\s+(.*?)\s*(?:#.*)?$", line) if fenced else None
        if not found:
            continue
        command = found.group(1)
        commands.append(re.sub(r"\s*\[[^\]]*\]", "", command))
        if "[" in command:
            commands.append(re.sub(r"\[([^\]]*)\]", r"\1", command))
        # a comment may show a follow-up command: "then: workbench package download ..."
        follow_up = re.search(rf"#.*?\b{name}\s+(.*)$", line)
        if follow_up:
            commands.append(follow_up.group(1))
    return commands


def test_the_readme_shows_the_commands_this_test_checks():
    commands = readme_commands()
    assert len(commands) >= 25 and any(c.startswith("report show") and "--order-by" in c for c in commands)


def test_the_readme_shows_the_local_stack_commands_as_workbench_dev():
    assert {c.split()[0] for c in readme_commands("workbench-dev")} == {"up", "status", "down", "demo"}
    assert any("--model yolov4" in c for c in readme_commands("workbench-dev"))


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_line_parses(command):
    try:
        build_parser().parse_args(shlex.split(command))
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"`workbench {command}` is refused by the CLI (exit {exc.code})")


@pytest.mark.parametrize("command", readme_commands("workbench-dev"))
def test_every_readme_workbench_dev_line_parses(command):
    try:
        build_dev_parser().parse_args(shlex.split(command))
    except SystemExit as exc:
        pytest.fail(f"`workbench-dev {command}` is refused by workbench-dev (exit {exc.code})")
