"""The instruction sets the project's own choices depend on (the overflow fix; later the precisions), read
from the CPU, or from WORKBENCH_CPU_ISA so that every CPU class's logic can be exercised on any machine.

The setting changes what the project decides, not what OpenVINO runs: its CPU plugin still uses the
machine's kernels. To run OpenVINO's kernels of an older ISA too, set oneDNN's ONEDNN_MAX_CPU_ISA (e.g.
AVX2: INT8 convolutions then run jit_avx2_I8); the plugin still defaults float models to bf16 from its own
CPUID reading, so compile those with INFERENCE_PRECISION_HINT=f32 under that cap (README, "Every CPU").
"""

from __future__ import annotations

import functools
import platform

from services.common.settings import Settings
from workbench_runtime.errors import InvalidArgument

# the levels oneDNN names (ONEDNN_MAX_CPU_ISA), each with the flags of the CPUs it names
_AVX512 = ("avx2", "avx512f")
LEVELS = {
    "avx2": ("avx2",),  # Haswell to Zen 3
    "avx2_vnni": ("avx2", "avx_vnni"),  # Alder Lake
    "avx512_core": _AVX512,  # Skylake-SP
    "avx512_core_vnni": (*_AVX512, "avx512_vnni"),  # Cascade Lake, Ice Lake
    "avx512_core_bf16": (*_AVX512, "avx512_vnni", "avx512_bf16"),  # Cooper Lake, Zen 4
    "avx512_core_amx": (*_AVX512, "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16"),  # Sapphire Rapids
}
# instruction sets that change how fast, and in which precision, OpenVINO runs on a CPU
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "avx_vnni")


def flags() -> frozenset[str]:
    """The instruction sets of FLAGS this CPU has, or those WORKBENCH_CPU_ISA's level implies (it replaces the
    CPU's, so a newer level than the machine's can be exercised as well as an older one)."""
    level = Settings.from_env().cpu_isa.strip().lower()
    if not level:
        return machine_flags()
    if level not in LEVELS:
        raise InvalidArgument(f"WORKBENCH_CPU_ISA={level!r} is not one of {', '.join(LEVELS)}", field="cpu_isa")
    return frozenset(LEVELS[level])


def machine_flags() -> frozenset[str]:
    """What /proc/cpuinfo lists (nothing off Linux)."""
    return frozenset(FLAGS) & set(_cpuinfo().get("flags", "").split())


def has_vnni() -> bool:
    """u8 x s8 dot products without VNNI (AVX2 only) go through vpmaddubsw, whose i16 sums saturate."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags())


def model_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it, else what platform knows."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ({} off Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields
