"""Training-step speed of the three stages, with the stage-3 per-unit loop reference in the same run.

    python benchmarks/bench_training.py                        # every stage, small and published, batch 32
    python benchmarks/bench_training.py --stages 3 --sizes published --iters 2
    python benchmarks/bench_training.py --quick                # fewer variants and iterations

Prints one JSON document. Every figure comes from this process, on ``torch.get_num_threads()``
threads (1 by default: run it under ``taskset -c <core>``). A *step* is what the trainer does per
batch: zero the gradients, the loss forward, backward, the optimiser and lr-scheduler steps and
the EMA update. Each variant gets one untimed warm-up step and ``--iters`` timed steps, starting
from the same weights and seeing the same batch, timesteps, noise and sampled units, so their
losses and gradients can be compared.

Stage 3 variants (``--variants``), run in this order:

* ``reference``: the per-unit Python loop below (:func:`reference_stage3_loss`), built from the
  module's own networks: one frozen UNet pass, then N plain shift-decoder passes over the B
  samples, float32. It is the baseline every other variant is compared with.
* ``fp32``: ``DisDiffModule.compute_losses`` with the config's same-maths settings
  (``unit_pass: auto``, skip terms shared between units, fused attention) in float32 (both bf16
  switches off).
* ``bf16``: ``fp32`` with ``autocast_bf16: true`` (denoiser and image encoder in bf16).
* ``bf16_all``: ``bf16`` plus ``autocast_bf16_dis_path: true`` (first-stage decoder and
  re-encoder of the disentangling loss in bf16 too).

The published stage-3 configs ship ``autocast_bf16: auto`` (bf16 on a CPU with native bf16
instructions, float32 elsewhere) and ``autocast_bf16_dis_path: false`` (issue 13);
``shipped_config`` in the output says which of ``fp32`` / ``bf16`` that resolves to on the
machine of the run.
* ``reference_3d``: the reference with the attention layout of the code before this benchmark
  (see ``attention_3d``), i.e. the original per-unit loop as it ran; speed-ups are also given
  against it.
* levers, measured to justify the defaults: ``batched`` / ``looped`` (``unit_pass`` forced; the
  one equal to what ``auto`` picks is skipped), ``no_skip_reuse`` (the unit-independent skip
  terms recomputed per unit), ``attention_3d`` (the attention layout before the fused kernel:
  3-d strided q/k/v, which the CPU dispatcher sends to the unfused bmm + softmax path),
  ``threads2`` (two intra-op threads on the one core), ``fp32_perturbed`` (float32 with the
  frozen UNet weights × (1 + 0.4 % noise): not a speed option but the yardstick for the bf16
  numerics — how much the gradient moves under a float32 change of bf16's size; warm-up only).
  The levers and ``reference_3d`` get one timed step (at the published size without warm-up);
  ``threads2``, ``fp32_perturbed`` and ``attention_3d`` run at the small size only (time budget;
  at the published size ``reference_3d`` against ``reference`` measures the attention lever).

Stage 2 variants: ``default``, ``bf16`` (``autocast_bf16: true``) and ``attention_3d``. Stage 1:
the default training step (manual optimisation: autoencoder then discriminator update).

Figures per variant: median/min/max step seconds (wall) and process-CPU seconds, samples/s,
speed-up over the reference, FLOPs per step (``FlopCounterMode``, warm-up step) and achieved
FLOP/s over the float32 matmul peak measured in the same process (before and after the steps;
the higher of the two), the peak RSS (VmHWM, reset before
each variant), and the loss and relative gradient error of the first step against the
float32 variant (``default`` in stages 1-2, ``fp32`` in stage 3) — the numerics check of the speed switches.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    Timing,
    build_stage1,
    build_stage2,
    build_stage3,
    compare,
    current_rss_mb,
    emit_json,
    images,
    machine,
    peak_rss_mb,
    perturb_frozen_unet,
    pin_threads,
    reset_peak_rss,
)
from references import patched_attention, qkv_attention_3d, reference_stage3_loss  # noqa: E402

STAGE3_VARIANTS = ("reference", "fp32", "bf16", "bf16_all", "reference_3d", "batched", "looped", "no_skip_reuse",
                   "attention_3d", "threads2", "fp32_perturbed")


# ---------------------------------------------------------------------------------------------
# generic step runner
# ---------------------------------------------------------------------------------------------
def grad_sample(params) -> torch.Tensor:
    """A compact fingerprint of the gradients: ≤ 1024 evenly strided entries of every tensor."""
    parts = []
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.detach().flatten().float()
        parts.append(g[:: max(1, g.numel() // 1024)].clone())
    return torch.cat(parts) if parts else torch.zeros(0)


def run_variant(
    name: str,
    module,
    initial_state: Path,
    loss_fn: Callable[[int], torch.Tensor],
    params: list[torch.nn.Parameter],
    batch: int,
    warmup: int,
    iters: int,
    count_flops_in_warmup: bool,
    setup: Callable[[], Any] | None = None,
    context: Callable[[], Any] | None = None,
    step_fn: Callable[[int], None] | None = None,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Time one variant: fresh weights/optimiser, ``warmup`` untimed steps (the first one under the
    FLOP counter if asked), then up to ``iters`` timed steps."""
    from flops import count_flops

    state = torch.load(initial_state, weights_only=True)
    module.load_state_dict(state)
    del state
    if setup is not None:
        setup()
    gc.collect()
    reset_peak_rss()
    rss_before = current_rss_mb()
    out: dict[str, Any] = {"variant": name}
    ctx = context or contextlib.nullcontext

    if step_fn is None:
        conf = module.configure_optimizers()
        opt = conf["optimizer"] if isinstance(conf, dict) else conf
        sched = conf["lr_scheduler"]["scheduler"] if isinstance(conf, dict) else None

        def step(i: int, record: bool = False) -> tuple[float, torch.Tensor | None]:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(i)
            loss.backward()
            fingerprint = grad_sample(params) if record else None
            opt.step()
            if sched is not None:
                sched.step()
            if getattr(module, "ema", None) is not None:
                module.on_train_batch_end(None, None, i)
            return float(loss.detach()), fingerprint
    else:
        def step(i: int, record: bool = False) -> tuple[float, torch.Tensor | None]:
            step_fn(i)
            return float("nan"), None

    with ctx():
        first = True
        for i in range(warmup):
            w0, c0 = time.perf_counter(), time.process_time()
            if first and count_flops_in_warmup:
                flops, (loss, fp) = count_flops(lambda: step(i, record=True))
                out["flops_per_step"] = flops
            else:
                loss, fp = step(i, record=first)
            if first:
                out["first_step_loss"] = loss
                out["_grads"] = fp
                out["warmup_seconds"] = round(time.perf_counter() - w0, 3)
                out["warmup_cpu_seconds"] = round(time.process_time() - c0, 3)
            first = False
        timing = Timing()
        start = time.perf_counter()
        for i in range(warmup, warmup + iters):
            with timing.measure():
                loss, fp = step(i, record=first)  # without warm-up, the first timed step is fingerprinted
            if first:
                out["first_step_loss"] = loss
                out["_grads"] = fp
            first = False
            if budget_s is not None and time.perf_counter() - start > budget_s:
                break
    out.update(timing.summary(per=batch) if timing.wall else {"iterations": 0})
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["rss_before_mb"] = round(rss_before, 1)
    return out


def save_initial(module) -> Path:
    """The starting weights on disk (not in memory, so that they do not count in the peak RSS)."""
    from common import _TMP

    path = Path(_TMP.name) / f"initial-{id(module)}.pt"
    torch.save(module.state_dict(), path)
    return path


def attach_flops(result: dict[str, Any], flops: int | None, peak: dict[str, Any]) -> None:
    from flops import achieved

    if flops and "seconds_median" in result:
        result["flop_rate"] = achieved(flops, result["seconds_median"], result["cpu_seconds_median"], peak)


def finish(results: list[dict[str, Any]], *baselines: str, numerics_baseline: str = "default") -> None:
    """Speed-ups against the ``baselines`` and numerics against the float32 ``numerics_baseline``
    variant (reported as ``numerics_vs_default``); drop fingerprints."""
    by = {r["variant"]: r for r in results}
    default = by.get(numerics_baseline)
    for r in results:
        for baseline in baselines:
            base = by.get(baseline)
            if base is not None and r is not base and "seconds_median" in r and "seconds_median" in base:
                r["speedup_vs_" + baseline] = round(base["seconds_median"] / r["seconds_median"], 3)
                r["speedup_vs_" + baseline + "_cpu"] = round(base["cpu_seconds_median"] / r["cpu_seconds_median"], 3)
        if default is not None and r is not default and r.get("_grads") is not None and default.get("_grads") is not None:
            r["numerics_vs_default"] = {k: float(f"{v:.3e}") for k, v in
                                        compare(r["first_step_loss"], r["_grads"], default["first_step_loss"],
                                                default["_grads"]).items()}
    for r in results:
        r.pop("_grads", None)


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------
def _draws(n: int, B: int, latent_shape, num_units: int | None, T: int = 1000) -> list[tuple]:
    g = torch.Generator().manual_seed(1234)
    out = []
    for _ in range(n):
        t = torch.randint(0, T, (B,), generator=g)
        noise = torch.randn((B, *latent_shape), generator=g)
        concept = torch.randint(num_units, (B,), generator=g) if num_units else None
        out.append((t, noise, concept))
    return out


def bench_stage1(size: str, batch: int, warmup: int, iters: int, peak: dict) -> dict[str, Any]:
    module = build_stage1(size)
    module.train()
    x = images(size, batch)
    opts = module.configure_optimizers()
    module.optimizers = lambda use_pl_optimizer=True: opts  # the trainer's role in manual optimisation
    module.manual_backward = lambda loss, *a, **k: loss.backward()
    initial = save_initial(module)

    def step(i: int) -> None:
        module.training_step({"image": x}, i)

    r = run_variant("default", module, initial, None, [], batch, warmup, iters, True, step_fn=step)
    attach_flops(r, r.get("flops_per_step"), peak)
    return {"stage": 1, "size": size, "batch": batch, "model": "VQ autoencoder + PatchGAN (LPIPS off: no weights)",
            "variants": [r]}


def bench_stage2(size: str, batch: int, warmup: int, iters: int, peak: dict, variants: list[str]) -> dict[str, Any]:
    module = build_stage2(size)
    module.train()
    x = images(size, batch)
    draws = _draws(warmup + iters, batch, module.latent_shape, None)
    params = list(module.unet.parameters())
    initial = save_initial(module)

    def loss_fn(i: int) -> torch.Tensor:
        t, noise, _ = draws[i]
        return module.diffusion_loss(module.encode_images(x), t, noise)[0].mean()

    results = []
    for name in variants:
        def setup(name=name) -> None:
            module.autocast_bf16 = name == "bf16"

        context = (lambda: patched_attention(qkv_attention_3d)) if name == "attention_3d" else None
        r = run_variant(name, module, initial, loss_fn, params, batch, warmup, iters, True, setup=setup,
                        context=context)
        attach_flops(r, r.get("flops_per_step"), peak)
        results.append(r)
    finish(results, "default")
    return {"stage": 2, "size": size, "batch": batch, "unet_parameters": sum(p.numel() for p in params),
            "variants": results}


LEVERS = ("reference_3d", "batched", "looped", "no_skip_reuse", "attention_3d", "threads2", "fp32_perturbed")


@contextlib.contextmanager
def _threads(n: int) -> Any:
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def bench_stage3(size: str, batch: int, plan: dict[str, tuple[int, int]], peak: dict) -> dict[str, Any]:
    """``plan``: variant -> (warm-up steps, timed steps), run in that order."""
    module = build_stage3(size)
    module.train()
    shipped = {"autocast_bf16": module.autocast_bf16, "autocast_bf16_dis_path": module.autocast_bf16_dis_path,
               "resolves_to": {(False, False): "fp32", (True, False): "bf16", (True, True): "bf16_all"}[
                   module.bf16_in_use()]}
    den = module.denoiser
    x = images(size, batch)
    n_steps = max(w + i for w, i in plan.values())
    draws = _draws(n_steps, batch, module.latent_shape, module.num_units)
    params = list(module.trainable_parameters())
    initial = save_initial(module)
    configured = den.unit_pass

    def loss_fn_default(i: int) -> torch.Tensor:
        t, noise, concept = draws[i]
        return module.compute_losses(x, t=t, noise=noise, concept=concept)["loss"]

    def loss_fn_reference(i: int) -> torch.Tensor:
        t, noise, concept = draws[i]
        return reference_stage3_loss(module, x, t, noise, concept)

    auto = den.resolve_unit_pass(batch, x.device)
    results = []
    for name, (warmup, iters) in plan.items():
        if name == auto:  # a forced unit pass equal to what the default resolves to repeats it
            continue

        def setup(name=name) -> None:
            den.unit_pass = name if name in ("batched", "looped") else configured
            den.reuse_skip_terms = name != "no_skip_reuse"
            module.autocast_bf16 = name in ("bf16", "bf16_all")
            module.autocast_bf16_dis_path = name == "bf16_all"
            if name == "fp32_perturbed":
                perturb_frozen_unet(module)

        context = None
        if name in ("attention_3d", "reference_3d"):
            context = lambda: patched_attention(qkv_attention_3d)  # noqa: E731
        elif name == "threads2":
            context = lambda: _threads(2)  # noqa: E731
        is_reference = name in ("reference", "reference_3d")
        r = run_variant(name, module, initial, loss_fn_reference if is_reference else loss_fn_default, params,
                        batch, warmup, iters, name in ("reference", "fp32"), setup=setup, context=context)
        setup()
        r["unit_pass"] = "looped (plain)" if is_reference else den.resolve_unit_pass(batch, x.device)
        results.append(r)
    count = next((r.get("flops_per_step") for r in results if r["variant"] == "fp32"), None)
    for r in results:
        attach_flops(r, r.get("flops_per_step") or count, peak)
    finish(results, "reference", "reference_3d", numerics_baseline="fp32")
    return {"stage": 3, "size": size, "batch": batch, "num_units": module.num_units,
            "trainable_parameters": sum(p.numel() for p in params), "auto_unit_pass": auto, "shipped_config": shipped,
            "plan": {k: list(v) for k, v in plan.items()}, "variants": results}


def stage3_plan(size: str, quick: bool, warmup: int, iters: int, iters_published: int,
                variants: list[str]) -> dict[str, tuple[int, int]]:
    """Warm-up and timed steps per variant: main variants fully, levers with fewer steps at published."""
    plan: dict[str, tuple[int, int]] = {}
    for name in variants:
        if size == "small":
            n = (warmup, 1 if (quick or name in LEVERS) else iters)
            if name == "fp32_perturbed":
                n = (1, 0)  # numerics only
        else:
            if quick and name not in ("reference", "fp32", "bf16", "bf16_all"):
                continue
            if name in LEVERS:
                n = (0, 1) if name != "fp32_perturbed" else (1, 0)
                if name in ("threads2", "fp32_perturbed", "attention_3d"):
                    continue  # small size only (budget); at published, reference_3d vs reference shows attention
            else:
                n = (warmup, 1 if quick else iters_published)
                if name in ("bf16", "bf16_all") and not quick:
                    n = (0, iters_published)  # after the float32 variants (budget); first timed step counts
        plan[name] = n
    return plan


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--sizes", nargs="+", default=["small", "published"], choices=["small", "published"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2, help="timed steps per variant (published stage 3: see --iters-published)")
    parser.add_argument("--iters-published", type=int, default=2, help="timed steps per variant of the published stage 3")
    parser.add_argument("--variants", nargs="+", default=list(STAGE3_VARIANTS), choices=STAGE3_VARIANTS)
    parser.add_argument("--stage2-variants", nargs="+", default=["default", "bf16", "attention_3d"],
                        choices=["default", "bf16", "attention_3d"])
    parser.add_argument("--quick", action="store_true",
                        help="1 timed step per variant; published stage 3: reference, fp32, bf16, bf16_all only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)

    pin_threads(args.threads)
    warnings.filterwarnings("ignore")
    from flops import peaks

    start = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "training steps", "machine": machine(), "batch": args.batch,
                              "matmul_peak": peaks(quick=args.quick), "stages": []}
    peak = result["matmul_peak"]["float32"]
    iters = 1 if args.quick else args.iters
    for stage in args.stages:
        for size in args.sizes:
            t0 = time.perf_counter()
            if stage == 1:
                entry = bench_stage1(size, args.batch, args.warmup, iters, peak)
            elif stage == 2:
                entry = bench_stage2(size, args.batch, args.warmup, iters, peak, args.stage2_variants)
            else:
                plan = stage3_plan(size, args.quick, args.warmup, iters, args.iters_published, list(args.variants))
                entry = bench_stage3(size, args.batch, plan, peak)
            entry["seconds_total"] = round(time.perf_counter() - t0, 1)
            result["stages"].append(entry)
            print(f"# stage {stage} {size}: {entry['seconds_total']} s", file=sys.stderr, flush=True)
            gc.collect()
    # The peak is measured again after the steps and the better of the two is the reference, so
    # that a moment of interference during one measurement does not inflate the ratios.
    again = peaks(quick=args.quick)
    result["matmul_peak_start"], result["matmul_peak_end"] = result["matmul_peak"], again
    result["matmul_peak"] = {dtype: max(result["matmul_peak_start"][dtype], again[dtype], key=lambda p: p["gflops_cpu"])
                             for dtype in ("float32", "bfloat16")}
    best = result["matmul_peak"]["float32"]
    for entry in result["stages"]:
        count = next((v.get("flops_per_step") for v in entry["variants"] if v["variant"] in ("default", "fp32")), None)
        for v in entry["variants"]:
            attach_flops(v, v.get("flops_per_step") or count, best)
    result["seconds_total"] = round(time.perf_counter() - start, 1)
    result["machine"]["load_average_1min_end"] = round(__import__("os").getloadavg()[0], 2)
    emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
