"""Inference speed: conditioned DDIM sampling and ``disdiff export``, each next to a reference.

    python benchmarks/bench_inference.py                 # small and published, full settings
    python benchmarks/bench_inference.py --quick

Prints one JSON document (one thread unless ``--threads``; run it under ``taskset -c <core>``).

* DDIM: images/s of ``DisDiff.generate`` (the API behind ``disdiff swap``/``traverse`` and the
  image logger): conditioned on each image's own code, 50 steps, η = 1, EMA shift decoder,
  decoded with VQ quantisation. The reference runs the same sampler with ε̂ from the plain
  per-unit loop (``DisDiffDenoiser.shift_fields_loop``, float32); both start from the same seed,
  and the largest difference of their images is reported.
* export: images/s of the ``disdiff export`` command run in-process on a stage-3 checkpoint
  (random weights) over a reduced ``shapes3d-synth`` grid, end to end (loading the checkpoint,
  reading the rendered cache, encoding, writing the npz). The cache is rendered beforehand, into
  a temporary folder, as a training run would have done.
* image logger: seconds per call of what the stage-3 image logger draws every
  ``lightning.image_logger.every_n_train_steps`` steps (``training_grids``: the images' own
  samples and the full and partial swap grids, 8 images, the config's ``log_ddim_steps``). Set
  against the training step time, it is the share of a training run the logging costs
  (``--logger-sizes``, default small only).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import _TMP, build_stage3, emit_json, image_resolution, images, machine, pin_threads  # noqa: E402


def _timed(fn) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def bench_ddim(size: str, batch: int, steps: int, reference: bool) -> dict[str, Any]:
    from disdiff.api import DisDiff
    from disdiff.diffusion.sampling import ddim_sample
    from disdiff.inference import generate_latents

    module = build_stage3(size)
    api = DisDiff(module)  # eval mode, EMA shift decoder, no gradients
    z = api.encode(images(size, batch, seed=1))
    den = module.denoiser
    api.generate(z, steps=2, eta=1.0, seed=0)  # warm-up

    def run_default():  # = DisDiff.generate, keeping the latents for the comparison
        lat = generate_latents(module, z, steps=steps, eta=1.0, seed=0)
        return lat, module.decode_latents(lat, quantize=True)

    (lat, out), wall, cpu = _timed(run_default)
    result: dict[str, Any] = {
        "size": size, "batch": batch, "steps": steps, "eta": 1.0,
        "unit_pass": den.resolve_unit_pass(batch, z.device),
        "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
        "images_per_s": round(batch / wall, 3), "images_per_cpu_s": round(batch / cpu, 3),
    }
    if reference:
        def eps_fn(x_t, t, coef):
            emb, hs, pred = den.frozen_pass(x_t, t)
            return pred + coef * den.shift_fields_loop(emb, hs, z).sum(dim=1)

        def run_reference():
            with torch.no_grad():
                lat = ddim_sample(eps_fn, module.schedule, (batch, *module.latent_shape), steps=steps, eta=1.0,
                                  generator=torch.Generator().manual_seed(0), device=z.device)
                return lat, module.decode_latents(lat, quantize=True)

        (ref_lat, ref), rwall, rcpu = _timed(run_reference)
        result["reference"] = {"seconds": round(rwall, 3), "cpu_seconds": round(rcpu, 3),
                               "images_per_s": round(batch / rwall, 3)}
        result["speedup_vs_reference"] = round(rwall / wall, 3)
        result["speedup_vs_reference_cpu"] = round(rcpu / cpu, 3)
        result["latent_max_abs_diff_vs_reference"] = float(f"{float((lat - ref_lat).abs().max()):.3e}")
        result["image_max_abs_diff_vs_reference"] = float(f"{float((out - ref).abs().max()):.3e}")
    return result


def bench_image_logger(size: str, max_images: int = 8) -> dict[str, Any]:
    from disdiff.inference.figures import training_grids

    module = build_stage3(size)
    x = images(size, max_images, seed=1)
    steps = int(module.log_ddim_steps)
    with torch.no_grad():
        training_grids(module, x[:2], steps=2, eta=1.0)  # warm-up
        grids, wall, cpu = _timed(lambda: training_grids(module, x, steps=steps, eta=1.0))
    return {"size": size, "max_images": max_images, "ddim_steps": steps,
            "images_drawn": sum(int(g.shape[0]) for k, g in grids.items() if k.startswith("samples")),
            "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3)}


def bench_export(size: str, factor_sizes: list[int], batch_size: int = 256) -> dict[str, Any]:
    from disdiff.cli.main import main as cli_main
    from disdiff.data.registry import load_dataset

    os.environ["DISDIFF_CACHE"] = str(Path(_TMP.name) / "cache")
    module = build_stage3(size)
    run = Path(_TMP.name) / f"export-run-{size}"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": 0}, ckpt)
    del module
    resolution = image_resolution(size)
    options = [f"resolution={resolution}", f"factor_sizes={list(factor_sizes)}"]
    dataset = load_dataset("shapes3d-synth", resolution=resolution, factor_sizes=list(factor_sizes))
    dataset.prepare()  # render the cache first, as training would have
    out = run / "representations.npz"
    argv = ["export", str(ckpt), "--dataset", "shapes3d-synth", "--out", str(out), "--overwrite", "--no-progress",
            "--batch-size", str(batch_size)]
    for opt in options:
        argv += ["--dataset-option", opt]
    with contextlib.redirect_stdout(io.StringIO()):
        rc, wall, cpu = _timed(lambda: cli_main(argv))
    n = int(dataset.num_images)
    return {"size": size, "images": n, "factor_sizes": list(factor_sizes), "batch_size": batch_size,
            "exit_code": rc, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "images_per_s": round(n / wall, 1), "images_per_cpu_s": round(n / cpu, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", default=["small", "published"], choices=["small", "published"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--ddim-batch", type=int, nargs=2, default=[16, 2], metavar=("SMALL", "PUBLISHED"))
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smaller DDIM batches and export grids, no reference at published")
    parser.add_argument("--logger-sizes", nargs="*", default=["small"], choices=["small", "published"],
                        help="sizes whose image-logger call is timed (default: small; none to skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    pin_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.INFO)
    start = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "inference", "machine": machine(), "ddim": [], "export": [],
                              "image_logger": []}
    for size in args.sizes:
        batch = args.ddim_batch[0] if size == "small" else args.ddim_batch[1]
        if args.quick:
            batch = max(1, batch // 2)
        reference = not args.no_reference and not (args.quick and size == "published")
        result["ddim"].append(bench_ddim(size, batch, args.steps, reference))
        print(f"# ddim {size}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    for size in args.sizes:
        grid = [4, 4, 4, 2, 4, 4] if size == "published" else [4, 4, 4, 8, 4, 8]
        if args.quick:
            grid = [4, 4, 2, 2, 4, 4] if size == "published" else [4, 4, 4, 4, 4, 4]
        result["export"].append(bench_export(size, grid))
        print(f"# export {size}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    for size in args.logger_sizes:
        result["image_logger"].append(bench_image_logger(size))
        print(f"# image logger {size}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    result["seconds_total"] = round(time.perf_counter() - start, 1)
    emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
