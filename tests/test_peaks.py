"""The matmul peak the throughput benchmark measures against: bounded on a CPU that emulates a precision, and taken
only in the precisions the stages compute in on that CPU."""
from __future__ import annotations

from ladder.tools.peaks import SIZES, matmul_peak, precisions


def test_sizes_stop_growing_once_a_product_is_slow():
    tried = []

    def emulated(dtype, size):  # about 1 GFLOP/s, as bfloat16 on a CPU without native bfloat16
        tried.append(size)
        return 1.0, 2 * size ** 3 / 1e9

    assert matmul_peak("bfloat16", repeats=2, measure=emulated) == 1.0
    assert tried == [512, 512, 1024, 1024]  # 512^3 takes 0.27 s, 1024^3 2.1 s: 2048 and 4096 are never tried
    tried.clear()
    assert matmul_peak("float32", repeats=1, measure=lambda d, n: (tried.append(n) or float(n), 0.01)) == 4096.0
    assert tried == list(SIZES)  # fast products: every size


def test_bfloat16_only_where_the_cpu_has_it_or_a_stage_asks_for_it():
    sections = {"sft": {"cpu_bf16": "auto"}, "dpo": {"cpu_bf16": "off"}, "reward": {"cpu_bf16": "on"}}
    assert precisions(sections, flags=[]) == {"sft": "float32", "dpo": "float32", "reward": "bfloat16"}
    assert precisions(sections, flags=["avx512_bf16"]) == {"sft": "bfloat16", "dpo": "float32", "reward": "bfloat16"}
