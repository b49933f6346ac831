"""Evaluate every checkpoint of a training run: a resumable scheduler with a process pool.

Layout (stage-3 runs)::

    <run>/representations/step=XXXXXXXX.npz   latents (M, N, d), global_step   (input)
    <run>/metrics/step=XXXXXXXX.json          one result record per checkpoint  (output)
    <run>/metrics/metrics.csv, metrics.md     all checkpoints, by step
    <run>/metrics/metrics_<name>.png          each metric against the training step

The original's ``<run>/dis_repre/*.npz`` (step under ``num_samples``) is also read.

* Resumable: a checkpoint whose JSON exists with the same dataset, metrics, settings, reduction
  and seed is skipped (``force=True`` recomputes).
* ``processes`` > 1 evaluates checkpoints in that many separate processes, one process per
  checkpoint, so a crash (an exception, or a worker killed e.g. for memory) is reported for that
  checkpoint and the others go on. The run fails (non-zero exit) if any checkpoint failed.
* No endless loop: one pass by default. ``watch=True`` keeps polling for new files every
  ``poll_seconds`` and stops after ``idle_timeout`` seconds without a new file. A file that
  failed is retried only after it changes (so a half-written file is retried once complete).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from disdiff.evaluation import tables
from disdiff.evaluation.protocol import DatasetInfo, evaluate_file, evaluation_record, resolve_settings
from disdiff.evaluation.representations import RepresentationError, read_step

REPRESENTATION_FOLDERS = ("representations", "dis_repre")
COMPARED_KEYS = ("schema", "dataset", "metrics_run", "settings", "reduction", "seed")


@dataclass
class Job:
    source: Path
    out_json: Path
    step: int | None


@dataclass
class JobResult:
    job: Job
    ok: bool
    message: str = ""
    seconds: float = 0.0
    headline: dict = field(default_factory=dict)


def find_representation_files(run_dir: str | Path) -> list[Path]:
    """Representation files of a run: ``representations/*.npz``, ``dis_repre/*.npz`` or ``*.npz`` at the top."""
    run_dir = Path(run_dir)
    files: list[Path] = []
    for folder in REPRESENTATION_FOLDERS:
        if (run_dir / folder).is_dir():
            files += sorted((run_dir / folder).glob("*.npz"))
    if not files:
        files = sorted(run_dir.glob("*.npz"))
    return [f for f in files if not f.name.startswith(".") and ".tmp" not in f.name]


def output_name(source: Path, step: int | None) -> str:
    return f"step={step:08d}.json" if step is not None else f"{source.stem}.json"


def is_current(out_json: Path, expected: dict) -> bool:
    """Whether ``out_json`` holds a finished result computed with the expected options."""
    record = tables.read_record(out_json)
    if record is None:
        return False
    return all(record.get(k) == expected.get(k) for k in COMPARED_KEYS)


def expected_record(info: DatasetInfo, options: dict) -> dict:
    metrics = list(options.get("metrics") or info.default_metrics())
    settings = resolve_settings(metrics, options.get("settings"))
    reduction = options.get("reduction") or info.default_reduction()
    record = evaluation_record(info, metrics, settings, reduction, options.get("seed", 0))
    return json.loads(json.dumps(record))  # the same types as a record read back from its file


def plan_jobs(run_dir: Path, out_dir: Path, info: DatasetInfo, options: dict, force: bool = False
              ) -> tuple[list[Job], list[Job]]:
    """(to do, already done) for every representations file of the run."""
    expected = expected_record(info, options)
    todo, done, seen = [], [], {}
    for source in find_representation_files(run_dir):
        try:
            step = read_step(source)
        except RepresentationError:
            step = None  # unreadable: the job reports it
        out_json = out_dir / output_name(source, step)
        if out_json in seen:
            raise RepresentationError(f"{source} and {seen[out_json]} both hold step {step}; keep one")
        seen[out_json] = source
        job = Job(source, out_json, step)
        (done if not force and is_current(out_json, expected) else todo).append(job)
    return todo, done


# ----------------------------------------------------------------------------- workers
def _limit_threads(threads: int | None) -> Any:
    if threads is None:
        return None
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(int(threads))
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None


def _run_job(job: Job, info: DatasetInfo, options: dict, threads: int | None) -> JobResult:
    start = time.perf_counter()
    limits = _limit_threads(threads)
    try:
        record = evaluate_file(job.source, info, job.out_json, n_jobs=threads or 1, **options)
        return JobResult(job, True, seconds=time.perf_counter() - start, headline=record.get("headline", {}))
    except Exception as exc:  # reported per checkpoint; the others go on
        detail = "" if isinstance(exc, (RepresentationError, ValueError)) else "\n" + traceback.format_exc()
        return JobResult(job, False, f"{type(exc).__name__}: {exc}{detail}", time.perf_counter() - start)
    finally:
        if limits is not None:
            limits.restore_original_limits()


def _job_main(conn, job: Job, info: DatasetInfo, options: dict, threads: int | None) -> None:
    result = _run_job(job, info, options, threads)
    conn.send(result)
    conn.close()


def _worker_context():
    """A clean start method: a fork server that has imported the evaluation code once (fast starts,
    no inherited threads), else spawn."""
    try:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["disdiff.evaluation.runs"])
        return ctx
    except ValueError:  # pragma: no cover - platforms without fork
        return mp.get_context("spawn")


def run_jobs(jobs: list[Job], info: DatasetInfo, options: dict, processes: int = 1, threads: int | None = None,
             log: Callable[[str], None] = print, target: Callable | None = None) -> list[JobResult]:
    """Evaluate ``jobs``; in-process for ``processes`` == 1, else one fresh process per job, ``processes`` at once."""
    results: list[JobResult] = []

    def report(result: JobResult) -> None:
        results.append(result)
        name = result.job.source.name
        if result.ok:
            scores = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.headline.items())
            log(f"[{len(results)}/{len(jobs)}] {name}: {scores} ({result.seconds:.1f} s)")
        else:
            log(f"[{len(results)}/{len(jobs)}] {name}: FAILED: {result.message}")

    if processes <= 1:
        for job in jobs:
            report(_run_job(job, info, options, threads))
        return results
    ctx = _worker_context()
    pending = list(jobs)
    running: dict[Any, tuple[Job, Any, Any, float]] = {}  # sentinel -> (job, process, conn, start)
    while pending or running:
        while pending and len(running) < processes:
            job = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=target or _job_main, args=(child, job, info, options, threads), daemon=True)
            proc.start()
            child.close()
            running[proc.sentinel] = (job, proc, parent, time.perf_counter())
        for sentinel in wait(list(running), timeout=5.0):
            job, proc, conn, start = running.pop(sentinel)
            result = None
            try:
                if conn.poll(0.5):
                    result = conn.recv()
            except (EOFError, OSError):
                result = None
            proc.join(5)
            conn.close()
            if result is None:
                result = JobResult(job, False, f"worker process died with exit code {proc.exitcode} "
                                   "(killed, or out of memory?)", time.perf_counter() - start)
            report(result)
    return results


# ------------------------------------------------------------------------------ a run
def refresh_outputs(out_dir: Path, title: str = "") -> list[dict]:
    """Rewrite the CSV, markdown table and PNG plots of a metrics folder."""
    from disdiff.evaluation.plots import plot_metrics

    records = tables.write_run_tables(out_dir, title)
    plot_metrics(records, out_dir, title)
    return records


def evaluate_run(run_dir: str | Path, info: DatasetInfo, out_dir: str | Path | None = None, processes: int = 1,
                 threads: int | None = None, force: bool = False, watch: bool = False, poll_seconds: float = 30.0,
                 idle_timeout: float = 1800.0, settle_seconds: float = 2.0, log: Callable[[str], None] = print,
                 **options) -> list[JobResult]:
    """Evaluate every (new) checkpoint of ``run_dir``; see the module docstring. Returns this call's results."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "metrics"
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // max(1, processes))
    all_results: list[JobResult] = []
    failed: dict[Path, float] = {}
    last_new = time.monotonic()
    first = True
    while True:
        todo, done = plan_jobs(run_dir, out_dir, info, options, force and first)
        now = time.time()
        ready = []
        for job in todo:
            mtime = job.source.stat().st_mtime
            if failed.get(job.source) == mtime:
                continue  # failed before and unchanged since
            if watch and now - mtime < settle_seconds:
                continue  # still being written
            ready.append(job)
        if first:
            if not todo and not done and not watch:
                raise RepresentationError(
                    f"{run_dir}: no representation files found (expected {run_dir}/representations/step=XXXXXXXX.npz)")
            log(f"{run_dir}: {len(done)} checkpoint(s) already evaluated, {len(ready)} to evaluate"
                + (f" with {processes} processes" if processes > 1 and ready else ""))
        if ready:
            results = run_jobs(ready, info, options, processes, threads, log)
            for result in results:
                if not result.ok:
                    failed[result.job.source] = result.job.source.stat().st_mtime
            all_results += results
            last_new = time.monotonic()
        if ready or first:
            if any(out_dir.glob("*.json")):
                refresh_outputs(out_dir, run_dir.name)
        first = False
        if not watch:
            break
        if time.monotonic() - last_new > idle_timeout:
            log(f"no new checkpoint for {idle_timeout:.0f} s; stopped watching {run_dir}")
            break
        time.sleep(poll_seconds)
    return all_results
