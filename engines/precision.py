"""Which precision a model runs in (``PRECISION``), for every engine: fp32, or bf16 where it is native."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux), or none where they cannot be read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True on CPUs with native bf16 arithmetic (avx512_bf16 or AMX)."""
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def resolve_precision(setting: str, device: Any, flags: frozenset[str] | None = None) -> str:
    """``fp32`` or ``bf16`` for PRECISION ``setting`` on ``device`` (a torch.device or "cpu"/"cuda"). ``auto``, and
    unset, is bf16 on CUDA and on CPUs with native bf16 (avx512_bf16 or AMX), else fp32."""
    setting = setting or "auto"
    if setting not in PRECISIONS:
        raise ValueError(f"PRECISION={setting!r}: use one of {', '.join(PRECISIONS)}")
    if setting != "auto":
        return setting
    return "bf16" if getattr(device, "type", device) == "cuda" or native_bf16(flags) else "fp32"
