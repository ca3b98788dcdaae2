"""The machine a benchmark ran on, printed beside its figures: ratios to a
peer differ with the CPU's matrix and bf16/int8 vector extensions."""

import contextlib
import os
import platform

_EXTENSIONS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16",
               "avx512_vnni", "avx_vnni")


def _cpuinfo_field(name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith(name):
                return line.partition(":")[2].strip()
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def describe_cpu() -> str:
    """'<model>, <n> cores, <extensions>', e.g. 'AMD EPYC, 2 cores,
    avx512_bf16 avx512_vnni avx_vnni'."""
    flags = set((_cpuinfo_field("flags") or "").split())
    extensions = " ".join(f for f in _EXTENSIONS if f in flags) or "none"
    return f"{cpu_model()}, {os.cpu_count()} cores, {extensions}"
