"""The instruction sets the project's choices see: the CPU's, or WORKBENCH_CPU_ISA's level instead."""

import pytest

from services.common import cpu
from workbench_runtime.errors import InvalidArgument


def test_without_the_setting_the_project_sees_the_cpus_own_flags(monkeypatch):
    monkeypatch.delenv("WORKBENCH_CPU_ISA", raising=False)
    listed = set(open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split())
    assert cpu.flags() == cpu.machine_flags() == frozenset(cpu.FLAGS) & listed
    assert cpu.has_vnni() == bool(listed & {"avx512_vnni", "avx_vnni", "amx_int8"})


@pytest.mark.parametrize("level, expected, vnni", [
    ("avx2", {"avx2"}, False),
    ("avx2_vnni", {"avx2", "avx_vnni"}, True),
    ("AVX512_CORE", {"avx2", "avx512f"}, False),  # Skylake-SP: AVX-512 without VNNI saturates as AVX2 does
    ("avx512_core_vnni", {"avx2", "avx512f", "avx512_vnni"}, True),
    ("avx512_core_amx", set(cpu.FLAGS), True),
])
def test_the_setting_replaces_the_cpus_flags_with_its_levels(monkeypatch, level, expected, vnni):
    monkeypatch.setenv("WORKBENCH_CPU_ISA", level)
    assert cpu.flags() == expected and cpu.has_vnni() == vnni


def test_an_unknown_level_is_refused_with_the_known_ones(monkeypatch):
    monkeypatch.setenv("WORKBENCH_CPU_ISA", "avx9000")
    with pytest.raises(InvalidArgument) as err:
        cpu.flags()
    assert "avx9000" in str(err.value) and "avx512_core_amx" in str(err.value)
