"""Generates the gRPC stubs (and their .pyi type stubs) from ../../protos at build time.

The stubs are written into src/workbench/v1/ (git-ignored) so that regular and editable
installs see the same files; they are never edited by hand.
"""

from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "protos"
OUT = HERE / "src"


def generate_stubs() -> None:
    if not PROTO_ROOT.is_dir():  # building from an sdist that already carries the stubs
        return
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "workbench").rglob("*.proto"))
    well_known = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed to generate the workbench stubs")
    for package_dir in (OUT / "workbench" / "v1",):
        (package_dir / "__init__.py").write_text('"""Generated from protos/workbench/v1; do not edit."""\n')


class GenerateStubs(Command):
    description = "generate gRPC stubs from protos/"
    user_options: list = []

    def initialize_options(self) -> None: ...

    def finalize_options(self) -> None: ...

    def run(self) -> None:
        generate_stubs()


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


class EggInfoWithStubs(egg_info):
    # Runs before package discovery is final in editable installs, so the stubs are listed.
    def run(self) -> None:
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs, "egg_info": EggInfoWithStubs, "generate_stubs": GenerateStubs})
