"""FLOP counting and the matmul peak the achieved FLOP/s are compared with.

    python benchmarks/flops.py            # prints the float32 / bfloat16 matmul peak as JSON

* :func:`count_flops` runs a callable under ``torch.utils.flop_counter.FlopCounterMode`` and
  returns its FLOPs (forward and backward, as they run). The counter's convention is 2 FLOPs per
  multiply-add; it counts matmuls, convolutions (forward and both backward products) and
  attention, not element-wise work (norms, activations, optimiser), so achieved FLOP/s are a
  lower bound of what the CPU did.
* :func:`matmul_peak` times square ``torch.mm`` products at a few sizes and keeps the best rate,
  by wall clock and by process CPU time (on a shared core the CPU-time figure is the machine's
  rate, the wall figure includes time other processes took).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_flash_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


#: The CPU flash-attention kernels are missing from FlopCounterMode's table (torch 2.13); they get
#: the formulas of the other scaled-dot-product-attention kernels.
CUSTOM_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """``(total FLOPs, fn())`` with ``fn`` run once under FlopCounterMode."""
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS)
    with counter:
        out = fn()
    return int(counter.get_total_flops()), out


def matmul_peak(dtype: torch.dtype = torch.float32, sizes=(1024, 2048), repeats: int = 3) -> dict[str, Any]:
    """Best FLOP/s of ``a @ b`` (n × n) over ``sizes``: by wall time and by process CPU time."""
    best_wall = best_cpu = 0.0
    best_n = None
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up
        flops = 2.0 * n**3
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            a @ b
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if flops / wall > best_wall:
                best_wall, best_n = flops / wall, n
            if cpu > 0:
                best_cpu = max(best_cpu, flops / cpu)
        del a, b
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "sizes": list(sizes),
        "best_size": best_n,
        "gflops_wall": round(best_wall / 1e9, 2),
        "gflops_cpu": round(best_cpu / 1e9, 2),
    }


def peaks(quick: bool = False) -> dict[str, Any]:
    sizes, repeats = (1024, 2048), (2 if quick else 3)
    fp32 = matmul_peak(torch.float32, sizes, repeats)
    bf16 = matmul_peak(torch.bfloat16, sizes, repeats)
    return {
        "float32": fp32,
        "bfloat16": bf16,
        "bf16_over_fp32": round(bf16["gflops_cpu"] / fp32["gflops_cpu"], 2) if fp32["gflops_cpu"] else None,
    }


def achieved(flops: int, seconds: float, cpu_seconds: float, peak: dict[str, Any]) -> dict[str, Any]:
    """GFLOP/s of a step and its ratio to the float32 matmul peak (wall/wall and CPU/CPU)."""
    wall_rate = flops / seconds if seconds > 0 else 0.0
    cpu_rate = flops / cpu_seconds if cpu_seconds > 0 else 0.0
    return {
        "gflop_per_step": round(flops / 1e9, 2),
        "gflops_wall": round(wall_rate / 1e9, 2),
        "gflops_cpu": round(cpu_rate / 1e9, 2),
        "ratio_to_fp32_peak_wall": round(wall_rate / 1e9 / peak["gflops_wall"], 3) if peak["gflops_wall"] else None,
        "ratio_to_fp32_peak_cpu": round(cpu_rate / 1e9 / peak["gflops_cpu"], 3) if peak["gflops_cpu"] else None,
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from common import machine, pin_threads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    pin_threads(1)
    print(json.dumps({"machine": machine(), "matmul_peak": peaks(args.quick)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
