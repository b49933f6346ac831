"""Shared helpers of the speed benchmarks: model builders, timers, machine facts.

Models are built from the shipped YAML configs (``src/disdiff/configs``) with random weights (the
cost of a step does not depend on the weights); the zero-initialised output layers are given small
random weights so that every path (e.g. the disentangling loss weight) is non-trivial.

Sizes:

* ``published``: ``autoencoder/shapes3d-vq-f4.yaml``, ``ldm/shapes3d-vq.yaml``,
  ``disdiff/shapes3d-vq-dis.yaml`` (64x64 images, 16x16x3 latents, N = 6);
* ``small``: ``ldm/shapes3d-synth-vq-small.yaml`` and ``disdiff/shapes3d-synth-vq-small-dis.yaml``
  (32x32 images, 8x8x3 latents, N = 6); the stage-1 "small" model is the published VQ design at
  32x32 (the first stage those configs expect: f = 4, 8x8x3 latents).

Every figure is measured in the running process with ``torch.get_num_threads()`` threads (the
benchmarks pin one: run them under ``taskset -c <core>`` on a shared machine).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

CONFIG_DIR = Path(__file__).resolve().parents[1] / "src" / "disdiff" / "configs"
SIZES = ("small", "published")


# ---------------------------------------------------------------------------------------------
# process / machine
# ---------------------------------------------------------------------------------------------
def pin_threads(threads: int = 1) -> None:
    """One intra-op and inter-op thread (call before any torch work)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity": affinity,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs``); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class Timing:
    """Wall and process-CPU seconds of repeated calls, reported as median / min / max / relative spread."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        w0, c0 = time.perf_counter(), time.process_time()
        yield
        self.wall.append(time.perf_counter() - w0)
        self.cpu.append(time.process_time() - c0)

    def summary(self, per: float | None = None, unit: str = "samples") -> dict[str, Any]:
        med = statistics.median(self.wall)
        out: dict[str, Any] = {
            "iterations": len(self.wall),
            "seconds_median": round(med, 4),
            "seconds_min": round(min(self.wall), 4),
            "seconds_max": round(max(self.wall), 4),
            "spread": round((max(self.wall) - min(self.wall)) / med, 3) if med > 0 else 0.0,
            # CPU time of this process: on a shared core it is the time we actually ran.
            "cpu_seconds_median": round(statistics.median(self.cpu), 4),
        }
        if per is not None:
            out[f"{unit}_per_s"] = round(per / med, 3)
            out[f"{unit}_per_cpu_s"] = round(per / statistics.median(self.cpu), 3)
        return out


def time_calls(fn: Callable[[], Any], warmup: int = 1, iters: int = 3, budget_s: float | None = None) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then up to ``iters`` timed (stopping early once over ``budget_s``)."""
    for _ in range(warmup):
        fn()
    timing = Timing()
    start = time.perf_counter()
    for _ in range(iters):
        with timing.measure():
            fn()
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return timing


# ---------------------------------------------------------------------------------------------
# configs and models
# ---------------------------------------------------------------------------------------------
def _yaml(rel: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / rel), resolve=False)


def stage1_model_config(size: str) -> dict:
    params = _yaml("autoencoder/shapes3d-vq-f4.yaml")["model"]["params"]
    if size == "small":
        params = copy.deepcopy(params)
        params["autoencoder_config"]["params"]["ddconfig"]["resolution"] = 32
    return params


def image_resolution(size: str) -> int:
    return 32 if size == "small" else 64


def stage2_params(size: str) -> dict:
    if size == "small":
        params = _yaml("ldm/shapes3d-synth-vq-small.yaml")["model"]["params"]
        params["first_stage_config"] = stage1_model_config("small")["autoencoder_config"]
    else:
        params = _yaml("ldm/shapes3d-vq.yaml")["model"]["params"]
    params["first_stage_ckpt"] = None
    return params


def stage3_params(size: str) -> dict:
    rel = "disdiff/shapes3d-synth-vq-small-dis.yaml" if size == "small" else "disdiff/shapes3d-vq-dis.yaml"
    return _yaml(rel)["model"]["params"]


def fill_zero_layers(module: torch.nn.Module, std: float = 0.02, seed: int = 0) -> None:
    """Give the zero-initialised weights small random values (as training would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1 and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import logging

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.getLogger("disdiff").level
        logging.getLogger("disdiff").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("disdiff").setLevel(level)


def build_stage1(size: str):
    from disdiff.training.autoencoder_module import AutoencoderModule

    torch.manual_seed(0)
    with _quiet():
        return AutoencoderModule(**stage1_model_config(size))


def build_stage2(size: str, scale_factor: float = 0.8):
    from disdiff.training.ldm_module import LatentDiffusionModule

    torch.manual_seed(0)
    with _quiet():
        ldm = LatentDiffusionModule(**stage2_params(size))
    fill_zero_layers(ldm.unet)
    if ldm.ema is not None:
        ldm.ema = type(ldm.ema)(ldm.unet, decay=ldm.ema.decay)
    ldm.scale_factor.fill_(scale_factor)
    ldm._restored = True  # keep the fixed scale factor (no scale_by_std pass)
    return ldm


_STAGE2_CKPT: dict[str, Path] = {}
_TMP = tempfile.TemporaryDirectory(prefix="disdiff-bench-")


def stage2_checkpoint(size: str) -> Path:
    """A stage-2 checkpoint (random weights) in a temporary folder, built once per size."""
    if size not in _STAGE2_CKPT:
        ldm = build_stage2(size)
        path = Path(_TMP.name) / f"ldm-{size}.ckpt"
        torch.save({"state_dict": ldm.state_dict(), "hyper_parameters": dict(ldm.hparams), "global_step": 0}, path)
        _STAGE2_CKPT[size] = path
        del ldm
        gc.collect()
    return _STAGE2_CKPT[size]


def build_stage3(size: str, **overrides: Any):
    from disdiff.training.disdiff_module import DisDiffModule

    params = stage3_params(size)
    params["ldm_ckpt"] = str(stage2_checkpoint(size))
    params.update(overrides)
    torch.manual_seed(0)
    with _quiet():
        module = DisDiffModule(**params)
    fill_zero_layers(module.denoiser.shift_out, seed=1)
    fill_zero_layers(module.denoiser, seed=2)
    if module.ema is not None:
        module.ema = type(module.ema)(module.denoiser, decay=module.ema.decay)
    return module


def stage3_training_step(module, x: torch.Tensor, x0_features: torch.Tensor | None = None) -> Callable[[int], None]:
    """``step(seed)``: one stage-3 optimiser step on images ``x`` (zero grad, losses with the draws of
    ``seed``, backward, AdamW), as the benchmarks of the small step time it; ``x0_features``: the images'
    frozen features looked up rather than computed (``DisDiffModule.compute_losses``)."""
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)

    def step(seed: int) -> None:
        out = module.compute_losses(x, generator=torch.Generator().manual_seed(seed), x0_features=x0_features)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()

    return step


def round_arguments(doc: str, threads: int = 2, steps: int = 12, rounds: int = 2) -> Any:
    """The command line of a benchmark that alternates its variants over rounds (``--threads``, ``--steps``
    per round and variant, ``--rounds``); sets torch's thread count."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per round and variant")
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def alternating_rounds(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each variant's timing (a call that returns seconds per step) in every one of ``rounds`` rounds, the
    variants taking turns within a round, so that drifts of the machine's speed hit all of them."""
    result: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, seconds in variants.items():
            result[name].append(round(seconds(), 4))
    return result


def print_rounds(args: Any, result: dict[str, list[float]], **extra: Any) -> None:
    """The rounds benchmarks' JSON document: machine, threads, batch 32, steps and seconds per step."""
    print(json.dumps({"machine": machine(), "threads": args.threads, "batch": 32, "steps": args.steps,
                      "seconds_per_step": result, **extra}, indent=1))


def step_seconds(module, steps: int, warmup: int = 3, x0_features: torch.Tensor | None = None) -> float:
    """Mean seconds of ``steps`` small stage-3 steps (batch 32, draws of seeds 0, 1, ...) after ``warmup``
    untimed ones, with a fresh optimiser; ``x0_features`` as :func:`stage3_training_step`."""
    step = stage3_training_step(module, images("small", 32), x0_features)
    for seed in range(warmup):
        step(seed)
    start = time.perf_counter()
    for seed in range(steps):
        step(seed)
    return (time.perf_counter() - start) / steps


def images(size: str, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = image_resolution(size)
    return torch.rand((batch, 3, r, r), generator=g) * 2 - 1


def compare(loss: float, grads: torch.Tensor, ref_loss: float, ref_grads: torch.Tensor) -> dict[str, float]:
    """Relative loss difference, relative L2 error and cosine of ``grads`` against the reference."""
    denom = float(ref_grads.norm()) or 1.0
    cos = torch.nn.functional.cosine_similarity(grads[None], ref_grads[None]).item() if grads.numel() else float("nan")
    return {
        "loss_rel_diff": abs(loss - ref_loss) / max(abs(ref_loss), 1e-12),
        "grad_rel_l2_err": float((grads - ref_grads).norm()) / denom,
        "grad_cosine": cos,
    }


def perturb_frozen_unet(module, rel: float = 0.004, seed: int = 9) -> None:
    """Frozen UNet weights × (1 + rel·n): a float32 change of bf16's relative size (2⁻⁸ ≈ 0.4 %)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.denoiser.unet.parameters():
            p.mul_(1 + rel * torch.randn(p.shape, generator=g))


def emit_json(result: dict[str, Any], path: str | None = None) -> None:
    """Print ``result`` as the benchmark's JSON document and, if ``path`` is given, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
