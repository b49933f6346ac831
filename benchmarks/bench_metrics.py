"""Time the four paper metrics for one checkpoint, and check them against a plain computation.

    python benchmarks/bench_metrics.py [--jobs 2] [--backend threading|loky] [--skip-reference] [--quick]

Setting: ``shapes3d-synth`` at its full 480,000-image grid (10, 10, 10, 8, 4, 15), a synthetic
6-unit representation (M, 6, 32) float32 of the factors (each unit: its factor along a random
direction, a little of the other factors, Gaussian noise; no images are needed because the
observations are dataset indices), published settings (spec 6.2), a fresh RandomState(0) per
metric.

* fast path: ``disdiff.evaluation.protocol.evaluate_representations`` (per-unit PCA, then
  beta-VAE, FactorVAE, DCI with ``--jobs`` parallel tree fits, MIG), the same code as
  ``disdiff evaluate``;
* reference: ``disdiff.metrics.reference`` (literal loops, one representation call per small
  batch, trees fitted one after another) on the same PCA-reduced representation.

Prints the seconds of each and whether every score is identical. The machine load (1-minute
load average) is printed too: on a shared machine other processes slow both paths down, and
with the kernel's per-session CPU fair share (``sched_autogroup``) a busy machine gives this
process about one share however many threads it runs, so the two parallel tree fits only pay off
when cores are free. To make the figure interpretable on a busy machine, the CPU time of every
tree fit is recorded (per thread) and the wall time on an otherwise idle 2-core machine is
estimated as: CPU time outside the fits + the longest worker's share of the fits (the fits are
scheduled longest first onto ``--jobs`` workers).

Measured on the 2-core AMD EPYC machine, otherwise idle (load average 0.4-0.9 at the start),
``python benchmarks/bench_metrics.py --jobs 2``: fast path **51.9-57.0 s** wall (four runs; DCI
51.0-56.1 s of it, the other metrics running beside it), with ``--backend loky`` 59.9 s; the single-process
reference 97.3-107.9 s; identical scores every time it was run. The 6 tree fits take 104 s of CPU together
(6.9-28.0 s each, the 15-class factor longest); everything else ~5 s. Two cores cannot do much
better than (104 + 5) / 2 = 54.5 s: the DCI trees (sklearn's GradientBoostingClassifier, 5,700
trees of depth 3 on 10,000 x 6 codes, ~17 ms a tree, mostly sklearn's per-node sorting) are >95 %
of the work, and a faster tree library would change the values. Earlier, on the same machine
under load (load average 5-6): 140-185 s wall.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def synthetic_latents(factors: np.ndarray, sizes, unit_size: int = 32, seed: int = 0) -> np.ndarray:
    rs = np.random.RandomState(seed)
    m, k = factors.shape
    scaled = (factors / (np.asarray(sizes) - 1.0)).astype(np.float32)  # in [0, 1]
    latents = np.empty((m, k, unit_size), dtype=np.float32)
    for unit in range(k):
        direction = rs.randn(unit_size).astype(np.float32)
        direction /= np.linalg.norm(direction)
        leak = rs.randn(k).astype(np.float32) * 0.05
        leak[unit] = 1.0
        signal = scaled @ leak  # mostly this unit's factor
        latents[:, unit, :] = signal[:, None] * direction[None, :]
        latents[:, unit, :] += rs.randn(m, unit_size).astype(np.float32) * 0.05
    return latents


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="parallel DCI tree fits in the fast path (default 2)")
    parser.add_argument("--backend", default="threading", choices=["threading", "loky"])
    parser.add_argument("--skip-reference", action="store_true", help="time only the fast path")
    parser.add_argument("--quick", action="store_true", help="reduced settings (a smoke test, not the benchmark)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    from disdiff.data.registry import load_dataset
    from disdiff.evaluation.protocol import DatasetInfo, evaluate_representations, resolve_settings
    from disdiff.evaluation.representations import Representations, reduce_units
    from disdiff.evaluation.views import IndexObservations, LatentLookup
    from disdiff.metrics import PAPER_METRICS
    from disdiff.metrics.reference import REFERENCE

    dataset = load_dataset("shapes3d-synth")  # lazy: no image is rendered or read
    info = DatasetInfo.of(dataset, "shapes3d-synth")
    factors = dataset.factors_of(np.arange(dataset.num_images))
    t0 = time.perf_counter()
    latents = synthetic_latents(factors, dataset.factor_sizes)
    print(f"synthetic latents {latents.shape} in {time.perf_counter() - t0:.1f} s; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)

    overrides = {}
    if args.quick:
        overrides = {"beta_vae": {"num_train": 1000, "num_eval": 500}, "dci": {"num_train": 1000, "num_test": 500},
                     "factor_vae": {"num_train": 1000, "num_eval": 500, "num_variance_estimate": 1000},
                     "mig": {"num_train": 1000}}
    overrides.setdefault("dci", {})["backend"] = args.backend
    reps = Representations(latents=latents, step=0, path=Path("<synthetic>"))

    from disdiff.metrics import dci as dci_module

    fit_cpu: list[float] = []
    original_fit = dci_module._fit_one

    def timed_fit(*a, **k):
        t = time.thread_time()
        out = original_fit(*a, **k)
        fit_cpu.append(time.thread_time() - t)
        return out

    if args.backend == "threading":
        dci_module._fit_one = timed_fit
    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    cpu0 = time.process_time()
    record = evaluate_representations(reps, info, PAPER_METRICS, overrides, "pca", seed=0, n_jobs=args.jobs)
    fast_seconds = time.perf_counter() - start
    fast_cpu = time.process_time() - cpu0
    dci_module._fit_one = original_fit
    print(f"fast path: {fast_seconds:.1f} s wall ({fast_cpu:.1f} s CPU in this process; "
          f"per metric {record['seconds']}), load average {load0:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)
    estimate = None
    if fit_cpu:
        workers = [0.0] * max(1, args.jobs)
        for t in sorted(fit_cpu, reverse=True):
            workers[workers.index(min(workers))] += t
        estimate = fast_cpu - sum(fit_cpu) + max(workers)
        print(f"tree fits: {sum(fit_cpu):.1f} s CPU in {len(fit_cpu)} fits {[round(t, 1) for t in sorted(fit_cpu)]}; "
              f"estimated wall on an idle machine with {args.jobs} cores: {estimate:.1f} s "
              f"(everything else {fast_cpu - sum(fit_cpu):.1f} s CPU)", flush=True)
    for name in PAPER_METRICS:
        print(f"  {name}: {record['metrics'][name]}")
    result = {"fast_seconds": fast_seconds, "fast_cpu_seconds": fast_cpu, "fit_cpu_seconds": fit_cpu,
              "idle_estimate_seconds": estimate, "fast_breakdown": record["seconds"], "fast": record["metrics"],
              "jobs": args.jobs, "backend": args.backend, "quick": args.quick, "load_average": load0}

    if not args.skip_reference:
        representation = reduce_units(latents, "pca")
        view = IndexObservations(dataset.factor_sizes, dataset.factor_names)
        lookup = LatentLookup(representation)
        settings = resolve_settings(PAPER_METRICS, overrides)
        reference, ref_seconds = {}, {}
        start = time.perf_counter()
        for name in PAPER_METRICS:
            options = {k: v for k, v in settings[name].items() if k not in ("n_jobs", "backend")}
            t = time.perf_counter()
            reference[name] = REFERENCE[name](view, lookup, np.random.RandomState(0), **options)
            ref_seconds[name] = round(time.perf_counter() - t, 2)
        ref_total = time.perf_counter() - start
        same = all(reference[n] == record["metrics"][n] for n in PAPER_METRICS)
        print(f"reference (single process, plain loops): {ref_total:.1f} s {ref_seconds}")
        print(f"identical scores: {same}")
        if not same:
            for name in PAPER_METRICS:
                if reference[name] != record["metrics"][name]:
                    print(f"  {name}: fast {record['metrics'][name]} reference {reference[name]}")
        result.update({"reference_seconds": ref_total, "reference_breakdown": ref_seconds, "identical": same})
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result.get("identical", True) else 1


if __name__ == "__main__":
    sys.exit(main())
