"""Run OpenVINO as on an older CPU: `PYTHONPATH=tests/cpu_cap ONEDNN_MAX_CPU_ISA=AVX2 WORKBENCH_CPU_ISA=avx2 ...`.

oneDNN's ONEDNN_MAX_CPU_ISA caps the CPU plugin's kernels (INT8 convolutions then run jit_avx2_I8, which
saturates as an AVX2 machine does), but the plugin reads CPUID itself to pick bf16 as its default precision,
so under a cap below bf16 every float model fails to compile ("object is not initialized"). An AVX2 CPU runs
f32 whatever the hint says; this makes every compile in the process do the same. Python loads it at start-up
from PYTHONPATH, so the servers a test starts in other processes get it too.
"""

import os

_BF16_LEVELS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
                "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "DEFAULT", "ALL")
_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()



def _compile_in_f32(compile_model):
    def compile_in_f32(self, model, device_name=None, config=None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if str(k) != "INFERENCE_PRECISION_HINT"}
        config["INFERENCE_PRECISION_HINT"] = "f32"
        return compile_model(self, model, device_name, config, **kwargs)
    return compile_in_f32


if _cap and _cap not in _BF16_LEVELS:
    try:
        import openvino as ov
    except ImportError:  # a Python without OpenVINO (the SDK's own venv) has nothing to cap
        pass
    else:
        ov.Core.compile_model = _compile_in_f32(ov.Core.compile_model)
