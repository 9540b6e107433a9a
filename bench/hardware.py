"""What the benchmark machine is and what its matrix units deliver, measured in the same run.

`matmul_gflops` is the practical bound the model figures are compared with: dense square
products through the same torch kernels the encoder's linear layers use.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["CPU_FLAGS", "machine", "matmul_gflops"]

CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx2")
CPUINFO = Path("/proc/cpuinfo")
MEMINFO = Path("/proc/meminfo")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _first_value(text: str, key: str) -> str | None:
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def machine() -> dict[str, Any]:
    """CPU model, logical cores, the flags that decide bf16/int8 speed, torch threads, memory."""
    cpuinfo = _read(CPUINFO)
    flags = set((_first_value(cpuinfo, "flags") or "").split())
    memory = _first_value(_read(MEMINFO), "MemTotal")  # "24576000 kB"
    memory_gib = round(int(memory.split()[0]) / 2**20, 1) if memory else None
    return {
        "cpu": _first_value(cpuinfo, "model name") or platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory_gib,
    }


def matmul_gflops(dtype: torch.dtype, *, size: int = 2048, seconds: float = 1.5) -> float:
    """GFLOP/s of repeated `size`×`size` products in `dtype` (2·size³ flops each), after warm-up."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    with torch.inference_mode():
        for _ in range(2):  # kernel selection and first-touch of the buffers
            torch.matmul(a, b, out=out)
        count = 0
        began = time.perf_counter()
        while True:
            torch.matmul(a, b, out=out)
            count += 1
            elapsed = time.perf_counter() - began
            if elapsed >= seconds:
                break
    return 2 * size**3 * count / elapsed / 1e9
