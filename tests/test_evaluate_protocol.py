"""The evaluation protocol: representation files, PCA reduction, checks, the run scheduler and tables."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from disdiff.data.base import GroundTruthDataset
from disdiff.evaluation import aggregate, runs, tables
from disdiff.evaluation.protocol import DatasetInfo, evaluate_file, parse_setting, resolve_settings
from disdiff.evaluation.representations import (
    RepresentationError,
    check_matches_dataset,
    load_representations,
    reduce_units,
)
from disdiff.metrics import MetricError

SIZES = (3, 4, 5)
TINY = {"beta_vae": {"batch_size": 8, "num_train": 100, "num_eval": 50},
        "factor_vae": {"batch_size": 8, "num_train": 100, "num_eval": 50, "num_variance_estimate": 200},
        "dci": {"num_train": 150, "num_test": 60}, "mig": {"num_train": 300}}


class Grid(GroundTruthDataset):
    factor_names = ("a", "b", "c")
    factor_sizes = SIZES
    image_shape = (1, 1, 3)

    def _read_images(self, indices):
        raise AssertionError("evaluation must not read images")


@pytest.fixture(scope="module")
def info():
    return DatasetInfo.of(Grid(), "grid")


def factor_latents(noise=0.1, unit_size=3, seed=0):
    grid = Grid()
    f = grid.factors_of(np.arange(grid.num_images)).astype(np.float32)
    rs = np.random.RandomState(seed)
    directions = rs.randn(len(SIZES), unit_size).astype(np.float32)
    return f[:, :, None] * directions[None] + noise * rs.randn(len(f), len(SIZES), unit_size).astype(np.float32)


def test_pca_recovers_each_unit_and_none_keeps_everything():
    latents = factor_latents()
    reduced = reduce_units(latents, "pca")
    f = Grid().factors_of(np.arange(Grid().num_images))
    assert reduced.shape == (60, 3)
    for k in range(3):
        assert abs(np.corrcoef(reduced[:, k], f[:, k])[0, 1]) > 0.99
    assert reduce_units(latents, "none").shape == (60, 9)
    latents[:, 1] = 2.0  # a constant unit
    assert np.all(reduce_units(latents, "pca")[:, 1] == 0.0)


def test_representation_file_checks(tmp_path):
    good = tmp_path / "step=00000042.npz"
    np.savez(good, latents=factor_latents(), global_step=42)
    reps = load_representations(good)
    assert (reps.step, reps.num_rows, reps.num_units, reps.unit_size) == (42, 60, 3, 3)
    original = tmp_path / "epoch=000001.npz"
    np.savez(original, latents=factor_latents().reshape(60, 9), num_samples=7)  # the original's key; 2-d latents
    reps = load_representations(original, num_units=3)
    assert reps.step == 7 and reps.latents.shape == (60, 3, 3)
    with pytest.raises(RepresentationError, match="not divisible"):
        load_representations(original, num_units=4)

    bad = factor_latents()
    bad[17, 2, 1] = np.nan
    bad[40, 0, 0] = np.inf
    np.savez(tmp_path / "nan.npz", latents=bad)
    with pytest.raises(RepresentationError, match=r"nan\.npz.*first bad row 17 \(2 bad row"):
        load_representations(tmp_path / "nan.npz")
    np.savez(tmp_path / "nokey.npz", codes=bad)
    with pytest.raises(RepresentationError, match="no 'latents' array"):
        load_representations(tmp_path / "nokey.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(RepresentationError, match="cannot read"):
        load_representations(tmp_path / "broken.npz")
    with pytest.raises(RepresentationError, match="not found"):
        load_representations(tmp_path / "missing.npz")
    with pytest.raises(RepresentationError, match="59 rows but dataset grid has 60 images"):
        check_matches_dataset(type(reps)(reps.latents[:59], None, tmp_path / "x.npz"), 60, "grid")


def test_settings_resolution_and_parsing():
    settings = resolve_settings(["dci", "mig"], {"dci": {"num_train": 5}, "beta_vae": {"num_train": 3}})
    assert settings["dci"]["num_train"] == 5 and settings["mig"]["num_bins"] == 20 and "beta_vae" not in settings
    with pytest.raises(MetricError, match="unknown setting 'nope'"):
        resolve_settings(["dci"], {"dci": {"nope": 1}})
    with pytest.raises(MetricError, match="unknown metric"):
        resolve_settings(["xyz"])
    assert parse_setting("dci.num_train=2000") == ("dci", "num_train", 2000)
    assert parse_setting("factor_vae.argmin_index=active") == ("factor_vae", "argmin_index", "active")
    assert parse_setting("dci.gbt_random_state=none") == ("dci", "gbt_random_state", None)
    with pytest.raises(MetricError):
        parse_setting("num_train=3")


def test_evaluate_file_writes_a_record(tmp_path, info):
    path = tmp_path / "step=00000005.npz"
    np.savez(path, latents=factor_latents(noise=0.01))
    record = evaluate_file(path, info, tmp_path / "out.json", settings=TINY)
    assert json.loads((tmp_path / "out.json").read_text())["headline"] == record["headline"]
    assert record["step"] == 5 and record["reduction"] == "pca" and record["representation_dims"] == 3
    assert record["metrics"]["factor_vae"]["eval_accuracy"] == 1.0
    assert record["metrics"]["dci"]["disentanglement"] > 0.9
    assert set(record["headline"]) == {"FactorVAE", "DCI", "MIG", "beta-VAE"}
    np.savez(tmp_path / "short.npz", latents=factor_latents()[:50])
    with pytest.raises(RepresentationError, match="50 rows but dataset grid has 60"):
        evaluate_file(tmp_path / "short.npz", info, settings=TINY)


def _make_run(root, steps=(10, 20, 30)):
    folder = root / "representations"
    folder.mkdir(parents=True)
    for i, step in enumerate(steps):
        np.savez(folder / f"step={step:08d}.npz", latents=factor_latents(noise=0.05 * (i + 1), seed=i), global_step=step)
    return root


def test_run_is_resumable_reports_failures_and_writes_tables(tmp_path, info):
    run = _make_run(tmp_path / "run")
    (run / "representations" / "step=00000040.npz").write_bytes(b"garbage")  # a broken checkpoint
    logs = []
    options = {"settings": TINY, "metrics": ["factor_vae", "mig"]}
    results = runs.evaluate_run(run, info, log=logs.append, **options)
    assert [r.ok for r in results] == [True, True, True, False]
    assert "step=00000040.npz: FAILED" in "\n".join(logs)
    out = run / "metrics"
    assert sorted(p.name for p in out.glob("step=*.json")) == [f"step={s:08d}.json" for s in (10, 20, 30)]
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,representations,") and len(csv_lines) == 4
    assert "| 30 |" in (out / "metrics.md").read_text()
    assert (out / "metrics_factor_vae.png").stat().st_size > 1000 and (out / "metrics_mig.png").exists()

    # Second pass: only the broken file is tried again.
    results = runs.evaluate_run(run, info, log=logs.append, **options)
    assert [r.job.step for r in results] == [40]
    # Other settings make the old results stale.
    stale = runs.evaluate_run(run, info, log=logs.append, metrics=["mig"], settings={"mig": {"num_train": 200}})
    assert sorted(r.job.step for r in stale if r.ok) == [10, 20, 30]


def test_parallel_processes_and_watch_mode_terminate(tmp_path, info):
    run = _make_run(tmp_path / "run", steps=(1, 2))
    (run / "representations" / "step=00000003.npz").write_bytes(b"garbage")
    results = runs.evaluate_run(run, info, processes=2, threads=1, metrics=["mig"], settings=TINY, log=lambda s: None)
    assert sorted((r.job.step, r.ok) for r in results) == [(1, True), (2, True), (3, False)]
    bad = [r for r in results if not r.ok][0]
    assert "cannot read representations file" in bad.message
    # --watch: a checkpoint written meanwhile is evaluated; then, with nothing new, it stops after
    # the idle timeout instead of looping forever. The broken file is retried once, not again while unchanged.
    def write_later():
        time.sleep(0.3)
        tmp = run / "representations" / ".incoming.npz"
        np.savez(tmp, latents=factor_latents(seed=9), global_step=4)
        os.replace(tmp, run / "representations" / "step=00000004.npz")

    writer = threading.Thread(target=write_later)
    writer.start()
    results = runs.evaluate_run(run, info, watch=True, poll_seconds=0.05, idle_timeout=1.0, settle_seconds=0.0,
                                metrics=["mig"], settings=TINY, log=lambda s: None)
    writer.join()
    assert [(r.job.step, r.ok) for r in results] == [(3, False), (4, True)]


def crashing_worker(conn, job, info, options, threads):
    """A worker that dies hard (as if killed) on one checkpoint."""
    if job.step == 2:
        os._exit(7)
    runs._job_main(conn, job, info, options, threads)


def test_a_killed_worker_is_reported_and_the_others_finish(tmp_path, info):
    run = _make_run(tmp_path / "run", steps=(1, 2, 3))
    todo, _ = runs.plan_jobs(run, run / "metrics", info, {"metrics": ["mig"], "settings": TINY})
    logs = []
    results = runs.run_jobs(todo, info, {"metrics": ["mig"], "settings": TINY}, processes=2, threads=1,
                            log=logs.append, target=crashing_worker)
    assert sorted((r.job.step, r.ok) for r in results) == [(1, True), (2, False), (3, True)]
    assert "exit code 7" in [r for r in results if not r.ok][0].message
    assert (run / "metrics" / "step=00000003.json").is_file()


def test_seed_aggregation_table(tmp_path):
    for seed, (fvae, dci) in enumerate([(0.8, 0.5), (0.9, 0.7), (1.0, 0.6)]):
        folder = tmp_path / "exp" / f"seed{seed}" / "metrics"
        folder.mkdir(parents=True)
        for step, scale in ((100, 0.5), (200, 1.0)):
            record = {"step": step, "metrics": {"factor_vae": {"eval_accuracy": fvae * scale}},
                      "headline": {"FactorVAE": fvae * scale, "DCI": dci * scale}}
            (folder / f"step={step:08d}.json").write_text(json.dumps(record))
    table, groups = aggregate.aggregate([tmp_path / "exp"])
    assert groups[0][0] == "exp" and len(groups[0][1]) == 3
    assert "| exp | 3 | 200 | 0.900 ± 0.082 | 0.600 ± 0.082 |" in table
    assert table.index("FactorVAE") < table.index("DCI")
    table, _ = aggregate.aggregate([tmp_path / "exp" / "seed0", tmp_path / "exp" / "seed1"], step=100)
    assert "| exp | 2 | 100 | 0.425 ± 0.025 | 0.300 ± 0.050 |" in table
    with pytest.raises(RepresentationError, match="no evaluated runs"):
        aggregate.aggregate([tmp_path])
    assert tables.mean_std([1.0, None, 3.0]) == (2.0, 1.0, 2)


def test_attribute_dataset_is_scored_with_tad_on_raw_dimensions(tmp_path):
    class Faces(GroundTruthDataset):  # CelebA-like: no factor grid, 40 -> 3 binary attributes
        factor_names = ("image",)
        factor_sizes = (400,)
        image_shape = (1, 1, 3)
        is_factor_grid = False
        attribute_names = ("smile", "hat", "glasses")

        def __init__(self):
            self.attributes = np.random.RandomState(0).randint(0, 2, size=(400, 3)).astype(np.uint8)

        def _read_images(self, indices):
            raise AssertionError("not used")

    faces = Faces()
    info = DatasetInfo.of(faces, "faces")
    assert info.default_metrics() == ("tad",) and info.default_reduction() == "none"
    rs = np.random.RandomState(1)
    latents = np.stack([2.0 * faces.attributes[:, 0] + 0.1 * rs.randn(400), rs.randn(400)], axis=1)[:, None, :]
    np.savez(tmp_path / "faces.npz", latents=latents.reshape(400, 2, 1))
    record = evaluate_file(tmp_path / "faces.npz", info)
    assert record["metrics"]["tad"]["attributes_captured"] == 1
    assert record["headline"]["Attrs"] == 1 and record["representation_dims"] == 2
    with pytest.raises(MetricError, match="ground-truth factors"):
        evaluate_file(tmp_path / "faces.npz", info, metrics=["mig"])
