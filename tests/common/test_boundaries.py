"""Services meet only through contracts and the store: no service imports another service's modules, and
the shared kernel (services/common) imports no service. Read from the source, every import of every module."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"


def service_names(services: Path) -> list[str]:
    return sorted(p.name for p in services.iterdir() if p.is_dir() and (p / "__init__.py").exists() and p.name != "common")


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in the file, at any depth (function-level ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, node.module)]
            # "from services import gateway" names the service in the alias
            if node.module == "services":
                found += [(node.lineno, f"services.{alias.name}") for alias in node.names]
    return found


def crossings(services: Path = SERVICES) -> list[str]:
    """Every import from one service's package (or the kernel's) into another service's."""
    names = service_names(services)
    found = []
    for folder in ("common", *names):
        for path in sorted((services / folder).rglob("*.py")):
            for line, module in imported(path):
                parts = module.split(".")
                target = parts[1] if len(parts) > 1 and parts[0] == "services" else None
                if target in names and target != folder:
                    found.append(f"{folder}/{path.relative_to(services / folder)}:{line} imports {module}")
    return found


def test_the_services_are_found():
    assert {"converter", "quantizer", "benchmark", "accuracy", "gateway"} <= set(service_names(SERVICES))


def test_no_service_imports_another_and_the_kernel_imports_none():
    assert crossings() == []


def test_the_check_sees_a_crossing(tmp_path):
    """Planted: the quantizer importing the converter inside a function (lazy imports hide), and the kernel
    importing a service; both are found, and an import of the kernel is not."""
    for folder in ("common", "converter", "quantizer"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "quantizer" / "steps.py").write_text(
        "from services.common.pb import progress\n\ndef f():\n    from services.converter.convert import load\n")
    (tmp_path / "common" / "helpers.py").write_text("import services.quantizer.steps\n")
    assert crossings(tmp_path) == ["common/helpers.py:1 imports services.quantizer.steps",
                                   "quantizer/steps.py:4 imports services.converter.convert"]


def test_tests_share_helpers_not_each_other():
    """Shared test code lives in conftest.py or a helper module, never in another test module."""
    tests = SERVICES.parent / "tests"
    found = [f"{path.relative_to(tests)}:{line} imports {module}"
             for path in sorted(tests.rglob("*.py")) for line, module in imported(path)
             if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_")]
    assert found == []
