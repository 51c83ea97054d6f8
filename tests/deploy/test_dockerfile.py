"""deploy/Dockerfile and .dockerignore, checked statically (no Docker engine runs here).

A small parser reads the Dockerfile into stages of instructions; the tests assert the image's
design (multi-stage, pinned base, non-root numeric user, nothing that builds in the runtime
stage, the stubs generated during the build) and a set of hadolint's rules: DL3002 (last USER
not root), DL3003 (WORKDIR, not cd), DL3004 (no sudo), DL3005 (no apt-get upgrade), DL3006 and
DL3007 (tagged base, not latest), DL3008-style pinning of pip installs, DL3009 and DL3015 (apt
lists removed, --no-install-recommends), DL3020 (COPY, not ADD), DL3021 (COPY of several
sources into a folder ending in /), DL3025 (CMD and ENTRYPOINT in JSON form), DL3042 (no pip
cache), DL4000 (no MAINTAINER), DL4006-like (no `curl | sh`).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest

from services.common.settings import DEFAULT_PORTS
from tests.deploy.conftest import DEPLOY, REPO

DOCKERFILE = DEPLOY / "Dockerfile"
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|make|cmake|build-essential|python3?-dev|libc6?-dev|grpcio-tools|protoc|git|curl|wget)\b")


@dataclass
class Instruction:
    line: int
    keyword: str
    value: str

    @property
    def args(self) -> list[str]:
        return shlex.split(self.value)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions with continuation lines joined and comments dropped; then split into stages."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # comment lines inside a continued instruction
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, value = full.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), value.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif instruction.keyword not in ("ARG",) or stages:
            assert stages, f"line {instruction.line}: {instruction.keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return instructions, stages


INSTRUCTIONS, STAGES = parse(DOCKERFILE.read_text())
FINAL = STAGES[-1]
STAGE_NAMES = {s.name for s in STAGES if s.name}


def runs(stage: Stage) -> list[str]:
    return [i.value for i in stage.all("RUN")]


# -- the image's design ---------------------------------------------------------------------


def test_multi_stage_with_named_stages():
    assert len(STAGES) >= 2, "a builder stage and a runtime stage"
    assert all(stage.name for stage in STAGES), "every stage is named (FROM ... AS name)"
    assert len(STAGE_NAMES) == len(STAGES)


def test_base_images_are_pinned_to_an_exact_version():
    external = [s.base for s in STAGES if s.base not in STAGE_NAMES]
    assert external
    for image in external:
        assert "$" not in image, f"{image}: resolve build args in FROM by hand"
        name, _, tag = image.split("@")[0].rpartition(":")
        assert name and tag, f"{image} has no tag (DL3006)"
        assert tag != "latest", f"{image} (DL3007)"
        # an exact release (python:3.11.15-slim-bookworm), not a moving one (python:3.11-slim)
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: the tag is not an exact version"
    # the venv built in one stage runs on the interpreter of the other: the same base
    assert len(set(external)) == 1, f"stages use different bases: {external}"


def test_runtime_stage_runs_as_a_numeric_non_root_user():
    users = FINAL.all("USER")
    assert users, "the runtime stage sets no USER (DL3002)"
    user = users[-1].value
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: a numeric, non-zero uid (runAsNonRoot needs it)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # nothing runs after switching away from root that would need it
    after = FINAL.instructions[FINAL.instructions.index(users[-1]):]
    assert not [i for i in after if i.keyword in ("RUN", "USER") and i is not users[-1]]


def test_runtime_stage_has_no_build_tools():
    for command in runs(FINAL):
        assert "pip install" not in command and "pip3 install" not in command, command
        assert "apt-get install" not in command and "apk add" not in command, command
        assert not BUILD_TOOLS.search(command), command
    # it takes what it needs from the builder, and from the context only what it runs
    for copy in FINAL.all("COPY"):
        flags = [a for a in copy.args if a.startswith("--")]
        assert any(f.startswith("--from=") for f in flags), f"line {copy.line}: runtime COPY from the context"


def test_builder_generates_the_stubs_and_installs_without_editable_mode():
    builder = STAGES[0]
    installs = [c for c in runs(builder) if "pip install" in c]
    assert installs, "the builder installs nothing"
    assert any("./sdk/python" in c for c in installs), "the SDK (and with it the generated stubs) is not installed"
    assert not any(" -e " in f" {c} " or "--editable" in c for c in installs), "editable installs point at /src"
    copied = {i.args[-2] if len(i.args) == 2 else "" for i in builder.all("COPY")}
    assert {"protos/", "sdk/python/", "services/", "data/"} <= copied


def test_runtime_environment_matches_the_manifests():
    env = " ".join(i.value for i in FINAL.all("ENV"))
    for variable in ("HOME=/home/workbench", "TMPDIR=/tmp", "WORKBENCH_CACHE=/var/cache/workbench",
                     "PYTHONPATH=/app", "PYTHONDONTWRITEBYTECODE=1"):
        assert variable in env, variable
    exposed = {int(p) for i in FINAL.all("EXPOSE") for p in i.args}
    assert exposed == set(DEFAULT_PORTS.values())
    (cmd,) = FINAL.all("CMD")
    assert json.loads(cmd.value) == ["python", "-m", "services.gateway"]


# -- hadolint-style rules -------------------------------------------------------------------


def test_no_sudo_no_cd_no_upgrade_no_pipe_to_shell():
    for instruction in INSTRUCTIONS:
        if instruction.keyword != "RUN":
            continue
        command = instruction.value
        assert not re.search(r"\bsudo\b", command), f"line {instruction.line}: sudo (DL3004)"
        assert not re.search(r"(^|&&|;)\s*cd\s", command), f"line {instruction.line}: cd, use WORKDIR (DL3003)"
        assert not re.search(r"apt-get\s+(dist-)?upgrade", command), f"line {instruction.line} (DL3005)"
        assert not re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", command), f"line {instruction.line}: pipe to shell"


def test_apt_get_installs_are_minimal_and_clean():
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "RUN" and "apt-get install" in instruction.value:
            assert "--no-install-recommends" in instruction.value, f"line {instruction.line} (DL3015)"
            assert re.search(r"\s-y\b|--yes|--assume-yes", instruction.value), f"line {instruction.line} (DL3014)"
            assert "rm -rf /var/lib/apt/lists" in instruction.value, f"line {instruction.line} (DL3009)"


def test_pip_installs_keep_no_cache_and_install_only_local_or_pinned_packages():
    env = " ".join(i.value for s in STAGES for i in s.all("ENV"))
    for instruction in INSTRUCTIONS:
        if instruction.keyword != "RUN" or "pip install" not in instruction.value:
            continue
        assert "--no-cache-dir" in instruction.value or "PIP_NO_CACHE_DIR=1" in env, f"line {instruction.line} (DL3042)"
        for command in re.split(r"&&|;", instruction.value):
            words = shlex.split(command)
            if words[:2] != ["pip", "install"]:
                continue
            for package in (w for w in words[2:] if not w.startswith("-")):
                assert package.startswith((".", "/")) or "==" in package, f"{package}: not pinned (DL3013)"


def test_copy_not_add_and_json_form_commands():
    assert not [i for i in INSTRUCTIONS if i.keyword == "ADD"], "use COPY for local files (DL3020)"
    assert not [i for i in INSTRUCTIONS if i.keyword == "MAINTAINER"], "DL4000"
    for instruction in INSTRUCTIONS:
        if instruction.keyword in ("CMD", "ENTRYPOINT"):
            assert isinstance(json.loads(instruction.value), list), f"line {instruction.line} (DL3025)"
        if instruction.keyword == "COPY":
            sources = [a for a in instruction.args if not a.startswith("--")][:-1]
            if len(sources) > 1:
                assert instruction.args[-1].endswith("/"), f"line {instruction.line} (DL3021)"


def test_workdirs_are_absolute():
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "WORKDIR":
            assert instruction.value.startswith("/"), f"line {instruction.line}: relative WORKDIR (DL3000)"


# -- the build context ----------------------------------------------------------------------


def _ignored(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore semantics, reduced to what this file uses: last match wins."""
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        candidates = [pattern, f"{pattern}/*"] if "**" not in pattern else [pattern.replace("**/", "*")]
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(fnmatch(p, c) for p in prefixes for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_sends_what_the_build_copies_and_nothing_local():
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "an allowlist: everything is excluded unless named"
    for stage in STAGES:
        for copy in stage.all("COPY"):
            if any(a.startswith("--from=") for a in copy.args):
                continue
            for source in [a for a in copy.args if not a.startswith("--")][:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert not _ignored(source.rstrip("/"), rules), f"COPY {source}: excluded by .dockerignore"
                sample = next((REPO / source).rglob("*.py"), None) if (REPO / source).is_dir() else None
                if sample is not None:
                    assert not _ignored(str(sample.relative_to(REPO)), rules), f"{sample} would be left out"
    for local in (".venv/bin/python", "sdk/python/src/workbench/v1/gateway_pb2.py",
                  "services/__pycache__/stack.cpython-311.pyc", ".git/HEAD", "node_modules/x",
                  "deploy/k8s/overlays/prod/secrets/s3-root.env", "tests/conftest.py"):
        assert _ignored(local, rules), f"{local} would reach the build context"


@pytest.mark.parametrize("module", ["services.gateway", "services.converter", "services.quantizer",
                                    "services.benchmark", "services.accuracy", "services.web"])
def test_every_service_entrypoint_is_in_the_copied_tree(module):
    path = REPO / Path(*module.split(".")) / "__main__.py"
    assert path.is_file(), f"python -m {module} has nothing to run"
