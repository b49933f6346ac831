"""The bfloat16 autocast switches of the training modules: ``true``, ``false`` or ``"auto"``.

``"auto"`` turns bf16 autocast on only where it is a measured speed-up and off elsewhere:

* on a CPU with native bf16 arithmetic (the ``avx512_bf16`` or ``amx_bf16`` instruction sets),
  where oneDNN runs bf16 convolutions and matrix products about twice as fast as float32
  (``benchmarks/README.md``: the published stage-3 step 1.32x the per-unit float32 loop with bf16
  on the denoiser, the shipped setting; 1.55-1.75x with the disentangling path in bf16 too);
* off on CPUs without them (oneDNN would emulate bf16, slower than float32);
* off on CUDA and other accelerators, where the paper's float32 numerics are kept (set ``true``
  there to opt in).

bf16 changes the numerics; ``tests/test_speed_options.py`` states and checks the tolerance.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Union

import torch

__all__ = ["Bf16Setting", "check_bf16_setting", "cpu_has_native_bf16", "resolve_bf16"]

Bf16Setting = Union[bool, str]

_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check_bf16_setting(value: object, key: str) -> Bf16Setting:
    """``value`` as a switch setting (``True``, ``False`` or ``"auto"``); ValueError naming ``key`` otherwise.

    The strings ``"true"`` and ``"false"`` (any case, as a command line gives them) count as the booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("auto", "true", "false"):
        return {"auto": "auto", "true": True, "false": False}[value.lower()]
    raise ValueError(f"{key} must be true, false or auto, got {value!r}")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True if this CPU has native bf16 instructions (read from ``/proc/cpuinfo``; False where unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return any(flag in flags for flag in _NATIVE_BF16_FLAGS)
    return False


def resolve_bf16(setting: Bf16Setting, device: torch.device | str) -> bool:
    """Whether bf16 autocast is on for ``setting`` on ``device`` (see the module docstring for ``"auto"``)."""
    if setting == "auto":
        return torch.device(device).type == "cpu" and cpu_has_native_bf16()
    return bool(setting)
