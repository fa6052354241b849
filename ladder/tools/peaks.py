"""This machine's matrix-product speed: the yardstick benchmarks/throughput.py holds the stages' model FLOP/s against.

Bounded so that a peak is known within seconds on any CPU: the sizes grow only while one product stays under a
second, since a CPU without native bfloat16 emulates it at about 1 GFLOP/s (a 4096^3 product then takes minutes).
"""
from __future__ import annotations

import time
from typing import Callable

SIZES = (512, 1024, 2048, 4096)
SLOW_PRODUCT_SECONDS = 1.0  # a product slower than this stops the sizes from growing


def matmul_gflops(dtype, size: int, seconds: float = 1.0) -> tuple[float, float]:
    """(GFLOP/s of size x size products over about `seconds` on torch's threads, seconds the first timed one took)."""
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up: oneDNN picks and caches its kernel
    count, start, first = 0, time.perf_counter(), None
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
        first = first or time.perf_counter() - start
    return 2 * size ** 3 * count / (time.perf_counter() - start) / 1e9, first


def matmul_peak(dtype, repeats: int, measure: Callable[[object, int], tuple[float, float]] = matmul_gflops) -> float:
    """The best GFLOP/s over SIZES and `repeats`, the sizes growing while a product takes under
    SLOW_PRODUCT_SECONDS."""
    best = 0.0
    for size in SIZES:
        rates, first = zip(*(measure(dtype, size) for _ in range(repeats)))
        best = max(best, *rates)
        if min(first) > SLOW_PRODUCT_SECONDS:
            break
    return best


def precisions(stage_params: dict[str, dict], flags: list[str] | None = None) -> dict[str, str]:
    """What each training stage computes in on this CPU with its params section's cpu_bf16 (ladder.training.trainer decides
    it the same way when the stage runs): "bfloat16" (autocast) or "float32"."""
    from ladder.training.trainer import cpu_autocast

    return {stage: "bfloat16" if cpu_autocast(section["cpu_bf16"], {"cuda": False}, flags)[0] else "float32"
            for stage, section in stage_params.items()}
