"""Every speed benchmark of disdiff, one JSON document on stdout.

    taskset -c 1 python benchmarks/run_all.py [--quick] [--json FILE]

Runs, each in its own process on one thread (so the peak RSS of one does not hide another's):

1. ``bench_training.py``, once per stage and size: training step time, samples/s, FLOP/s
   against the float32 matmul peak measured in the same process, and peak RSS, for stages 1–3
   at the small and published configurations (batch 32), with the stage-3 per-unit loop
   reference and the speed options;
2. ``bench_inference.py``: conditioned DDIM (50 steps) images/s next to the per-unit loop
   reference, ``disdiff export`` images/s, and the seconds of one stage-3 image-logger call;
3. ``bench_metrics.py --skip-reference``: ``disdiff evaluate`` seconds per checkpoint (the
   paper's four metrics on a 480,000-image representation, published settings);
4. ``bench_render.py``: ``shapes3d-synth`` renderer images/s (64×64, full grid).

``--quick`` trims variants, iterations, batch and grid sizes (a smoke run of a few minutes); the
full run is sized to finish within 10 minutes on one idle core. On a shared core, compare the
``*_cpu`` figures (process CPU time), which do not count the time other processes took.
The ``summary`` block collects the headline figures and the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _run(name: str, argv: list[str], json_out: Path | None) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 1)
    print(f"# {name}: {seconds} s (exit {proc.returncode})", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"seconds_wall": seconds, "exit_code": proc.returncode}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2000:]
    if json_out is not None and json_out.is_file():
        out["result"] = json.loads(json_out.read_text())
    else:
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
        out["result"] = [json.loads(ln) for ln in lines] if lines else proc.stdout[-2000:]
    return out


def _variant(stage: dict, name: str) -> dict | None:
    return next((v for v in stage["variants"] if v["variant"] == name), None)


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    runs = [r.get("result") for r in results.get("training", {}).get("runs", [])]
    runs = [r for r in runs if isinstance(r, dict)]
    if runs:
        training = {"stages": [st for r in runs for st in r["stages"]]}
        s["torch_num_threads"] = sorted({r["machine"]["torch_num_threads"] for r in runs})
        s["matmul_peak_gflops"] = {
            dtype: {"wall": [r["matmul_peak"][dtype]["gflops_wall"] for r in runs],
                    "cpu": [r["matmul_peak"][dtype]["gflops_cpu"] for r in runs]}
            for dtype in ("float32", "bfloat16")}
        steps = {}
        for st in training["stages"]:
            key = f"stage{st['stage']}_{st['size']}"
            entry = {}
            for v in st["variants"]:
                e = {"step_s": v.get("seconds_median"), "step_cpu_s": v.get("cpu_seconds_median"),
                     "samples_per_s": v.get("samples_per_s"), "samples_per_cpu_s": v.get("samples_per_cpu_s"),
                     "spread": v.get("spread"), "iters": v["iterations"], "peak_rss_mb": v["peak_rss_mb"]}
                e = {k: val for k, val in e.items() if val is not None}
                if "flop_rate" in v:
                    e["gflop_per_step"] = v["flop_rate"]["gflop_per_step"]
                    e["fp32_peak_ratio_wall"] = v["flop_rate"]["ratio_to_fp32_peak_wall"]
                    e["fp32_peak_ratio_cpu"] = v["flop_rate"]["ratio_to_fp32_peak_cpu"]
                for k in ("speedup_vs_reference", "speedup_vs_reference_cpu", "speedup_vs_reference_3d",
                          "speedup_vs_reference_3d_cpu", "speedup_vs_default", "speedup_vs_default_cpu", "unit_pass"):
                    if k in v:
                        e[k] = v[k]
                if "numerics_vs_default" in v:
                    e["numerics_vs_default"] = v["numerics_vs_default"]
                entry[v["variant"]] = e
            steps[key] = entry
        s["training"] = steps
        targets = {}
        st3 = next((st for st in training["stages"] if st["stage"] == 3 and st["size"] == "published"), None)
        if st3 is not None:
            for name in ("fp32", "bf16", "bf16_all"):
                v = _variant(st3, name)
                if v is not None and "speedup_vs_reference" in v:
                    targets[f"stage3_published_{name}_speedup_vs_loop_reference"] = {
                        "wall": v["speedup_vs_reference"], "cpu": v["speedup_vs_reference_cpu"], "target": 1.5,
                        "met": min(v["speedup_vs_reference"], v["speedup_vs_reference_cpu"]) >= 1.5}
                    if "speedup_vs_reference_3d" in v:
                        targets[f"stage3_published_{name}_speedup_vs_loop_reference"]["vs_reference_3d"] = {
                            "wall": v["speedup_vs_reference_3d"], "cpu": v["speedup_vs_reference_3d_cpu"]}
            shipped = st3.get("shipped_config")
            if shipped is not None:
                key = f"stage3_published_{shipped['resolves_to']}_speedup_vs_loop_reference"
                targets["stage3_published_shipped_config"] = {**shipped, "speedup": targets.get(key)}
        for st in training["stages"]:
            if st["size"] != "published" or st["stage"] not in (2, 3):
                continue
            for name in ("default", "fp32", "bf16", "bf16_all"):
                v = _variant(st, name)
                if v is not None and "flop_rate" in v:
                    fr = v["flop_rate"]
                    targets[f"stage{st['stage']}_published_{name}_fp32_peak_ratio"] = {
                        "wall": fr["ratio_to_fp32_peak_wall"], "cpu": fr["ratio_to_fp32_peak_cpu"], "target": 0.5,
                        "met": min(fr["ratio_to_fp32_peak_wall"], fr["ratio_to_fp32_peak_cpu"]) >= 0.5}
        s["peak_rss_mb_published_training"] = {
            f"stage{st['stage']}": {name: _variant(st, name)["peak_rss_mb"] for name in ("default", "fp32", "bf16_all")
                                   if _variant(st, name) is not None}
            for st in training["stages"] if st["size"] == "published"}
        s["targets"] = targets
    inference = results.get("inference", {}).get("result")
    if isinstance(inference, dict):
        s["ddim_images_per_s"] = {d["size"]: {"batch": d["batch"], "steps": d["steps"], "images_per_s": d["images_per_s"],
                                              "images_per_cpu_s": d["images_per_cpu_s"],
                                              "reference_images_per_s": d.get("reference", {}).get("images_per_s"),
                                              "speedup_vs_reference": d.get("speedup_vs_reference")}
                                  for d in inference["ddim"]}
        s["export_images_per_s"] = {d["size"]: {"images": d["images"], "images_per_s": d["images_per_s"],
                                                "images_per_cpu_s": d["images_per_cpu_s"]} for d in inference["export"]}
    metrics = results.get("evaluate", {}).get("result")
    if isinstance(metrics, dict):
        s["evaluate_seconds_per_checkpoint"] = round(metrics["fast_seconds"], 1)
        s["evaluate_breakdown_s"] = metrics.get("fast_breakdown")
        s["evaluate_quick_settings"] = metrics.get("quick")
    render = results.get("render", {}).get("result")
    if isinstance(render, list) and render:
        s["render_images_per_s"] = {f"{r['resolution']}px": r["images_per_s"] for r in render}
    return s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="trimmed settings (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=["training", "inference", "evaluate", "render"], default=None)
    parser.add_argument("--json", default=None, help="also write the JSON document to this file")
    parser.add_argument("--summarise", metavar="FILE", default=None,
                        help="print the summary of an earlier run's JSON document and exit")
    args = parser.parse_args(argv)
    if args.summarise:
        print(json.dumps(summarise(json.loads(Path(args.summarise).read_text())), indent=2))
        return 0

    start = time.perf_counter()
    cpu_start = os.times()
    sections = args.only or ["training", "inference", "evaluate", "render"]
    results: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                               "quick": args.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                               "load_average_1min_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="disdiff-run-all-") as tmp:
        tmp_path = Path(tmp)
        q = ["--quick"] if args.quick else []
        if "training" in sections:
            # one process per stage and size: each peak RSS is that training's alone
            runs = []
            for stage in (1, 2, 3):
                for size in ("small", "published"):
                    out = tmp_path / f"training-{stage}-{size}.json"
                    runs.append(_run(f"training stage {stage} {size}",
                                     [str(HERE / "bench_training.py"), "--stages", str(stage), "--sizes", size, *q,
                                      "--json", str(out)], out))
            results["training"] = {"seconds_wall": round(sum(r["seconds_wall"] for r in runs), 1),
                                   "exit_code": max(r["exit_code"] for r in runs), "runs": runs}
        if "inference" in sections:
            out = tmp_path / "inference.json"
            results["inference"] = _run("inference", [str(HERE / "bench_inference.py"), *q, "--json", str(out)], out)
        if "evaluate" in sections:
            out = tmp_path / "metrics.json"
            results["evaluate"] = _run("evaluate", [str(HERE / "bench_metrics.py"), "--skip-reference", "--jobs", "1",
                                                    *q, "--json", str(out)], out)
        if "render" in sections:
            render_args = ["--resolution", "64"]
            if args.quick:
                render_args += ["--factor-sizes", "4", "4", "4", "8", "4", "15"]
            results["render"] = _run("render", [str(HERE / "bench_render.py"), *render_args], None)
    end = os.times()
    results["seconds_total_wall"] = round(time.perf_counter() - start, 1)
    results["cpu_seconds_total_children"] = round((end.children_user + end.children_system)
                                                  - (cpu_start.children_user + cpu_start.children_system), 1)
    results["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    try:
        results["summary"] = summarise(results)
    except Exception as exc:  # never lose the measurements to a summary bug
        results["summary"] = {"error": repr(exc)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    failed = [k for k in sections if results.get(k, {}).get("exit_code") not in (0, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
