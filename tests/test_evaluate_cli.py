"""``disdiff evaluate`` end to end on shapes3d-synth with a known representation, and its clear errors."""

from __future__ import annotations

import json

import numpy as np

from disdiff.cli.main import main

SIZES = (4, 4, 4, 3, 4, 5)
DATASET = ["--dataset", "shapes3d-synth", "--dataset-option", f"factor_sizes={list(SIZES)}",
           "--dataset-option", "resolution=16"]
SMALL = ["--set", "beta_vae.num_train=120", "--set", "beta_vae.num_eval=60",
         "--set", "factor_vae.num_train=200", "--set", "factor_vae.num_eval=100",
         "--set", "factor_vae.num_variance_estimate=1000",
         "--set", "dci.num_train=200", "--set", "dci.num_test=60", "--set", "mig.num_train=2000"]


def _factors():
    from disdiff.data.registry import load_dataset

    dataset = load_dataset("shapes3d-synth", factor_sizes=SIZES, resolution=16, storage="lazy")
    return dataset.factors_of(np.arange(dataset.num_images)).astype(np.float32)


def _latents(unit_size=4, noise=0.02, seed=0):
    """Each unit holds its factor along a random direction, plus a little noise: perfectly disentangled."""
    f = _factors()
    rs = np.random.RandomState(seed)
    directions = rs.randn(f.shape[1], unit_size).astype(np.float32)
    return f[:, :, None] * directions + noise * rs.randn(len(f), f.shape[1], unit_size).astype(np.float32)


def test_evaluate_run_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "representations").mkdir(parents=True)
    for step in (500, 1000):
        np.savez(run / "representations" / f"step={step:08d}.npz", latents=_latents(seed=step), global_step=step)
    assert main(["evaluate", str(run), *DATASET, *SMALL]) == 0
    out = capsys.readouterr().out
    assert "| 1000 |" in out
    # each factor's FactorVAE votes all go to its own unit (perfect code), and the printout says so
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("FactorVAE evaluation votes: the unit")))
    winners = [line.split()[-2:] for line in lines[start + 1:start + 7]]
    assert winners == [[f"{k}:", "1.00"] for k in range(6)]
    metrics = run / "metrics"
    record = json.loads((metrics / "step=00001000.json").read_text())
    assert record["num_rows"] == 3840 and record["num_units"] == 6 and record["unit_size"] == 4
    assert record["metrics"]["factor_vae"]["eval_accuracy"] == 1.0
    assert record["metrics"]["beta_vae"]["eval_accuracy"] == 1.0
    assert record["metrics"]["dci"]["disentanglement"] > 0.95 and record["metrics"]["dci"]["completeness"] > 0.95
    assert record["metrics"]["mig"]["discrete_mig"] > 0.9
    for name in ("metrics.csv", "metrics.md", "metrics_beta_vae.png", "metrics_factor_vae.png", "metrics_dci.png",
                 "metrics_mig.png"):
        assert (metrics / name).is_file(), name
    # Resumable: nothing left to do.
    assert main(["evaluate", str(run), *DATASET, *SMALL]) == 0
    assert "2 checkpoint(s) already evaluated, 0 to evaluate" in capsys.readouterr().out


def test_single_file_and_clear_errors(tmp_path, capsys):
    good = tmp_path / "reps.npz"
    np.savez(good, latents=_latents(unit_size=2))
    assert main(["evaluate", str(good), *DATASET, "--metrics", "mig,factor_vae", *SMALL,
                 "--out", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert set(record["metrics"]) == {"mig", "factor_vae"}
    capsys.readouterr()

    short = tmp_path / "short.npz"
    np.savez(short, latents=_latents(unit_size=2)[:-1])
    assert main(["evaluate", str(short), *DATASET]) == 1
    err = capsys.readouterr().err
    assert "3839 rows but dataset shapes3d-synth has 3840 images" in err

    nan = tmp_path / "nan.npz"
    latents = _latents(unit_size=2)
    latents[123, 4, 0] = np.nan
    np.savez(nan, latents=latents)
    assert main(["evaluate", str(nan), *DATASET]) == 1
    assert "nan.npz: latents contain NaN or inf values: first bad row 123" in capsys.readouterr().err

    empty = tmp_path / "no_data"
    empty.mkdir()
    assert main(["evaluate", str(good), "--dataset", "shapes3d", "--data-dir", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "shapes3d" in err and "not found" in err

    assert main(["evaluate", str(good)]) == 1  # no dataset named anywhere
    assert "--dataset is required" in capsys.readouterr().err
    assert main(["evaluate", str(good), *DATASET, "--set", "dci.bogus=1"]) == 1
    assert "unknown setting 'bogus'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing_run"), *DATASET]) == 1
    assert "no such run directory" in capsys.readouterr().err


def test_fid_without_weights_and_aggregate_commands(tmp_path, capsys):
    images = np.zeros((4, 3, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "a.npz", arr_0=images)
    np.savez(tmp_path / "b.npz", arr_0=images)
    assert main(["evaluate", "--fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 1
    assert "No Inception weights ship with disdiff" in capsys.readouterr().err
    rs = np.random.RandomState(0)
    feats = rs.randn(100, 3)
    np.savez(tmp_path / "s1.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    assert main(["evaluate", "--fid", str(tmp_path / "s1.npz"), str(tmp_path / "s1.npz")]) == 0  # statistics only
    assert "FID 0.0000" in capsys.readouterr().out

    for seed, value in enumerate((0.5, 0.7)):
        folder = tmp_path / "exp" / f"seed{seed}" / "metrics"
        folder.mkdir(parents=True)
        (folder / "step=00000010.json").write_text(json.dumps({"step": 10, "metrics": {}, "headline": {"DCI": value}}))
    assert main(["evaluate", "--aggregate", str(tmp_path / "exp"), "--out", str(tmp_path / "table.md")]) == 0
    assert "0.600 ± 0.100" in (tmp_path / "table.md").read_text()


def test_probe_is_in_the_record_unless_skipped(tmp_path, capsys):
    reps = tmp_path / "reps.npz"
    np.savez(reps, latents=_latents())
    common = [str(reps), *DATASET, *SMALL, "--metrics", "mig", "--set", "probe.num_train=600", "--set", "probe.num_test=300"]
    assert main(["evaluate", *common, "--out", str(tmp_path / "with.json")]) == 0
    printed = capsys.readouterr().out
    assert "linear probe of the full code" in printed and "most variance explained: unit" in printed
    record = json.loads((tmp_path / "with.json").read_text())
    # each unit holds its factor linearly (plus a little noise): the probe finds every factor
    assert min(record["probe"]["accuracy"]) > 0.9
    # ... and unit k's variance is mostly factor k's (the diagonal of the variance-explained matrix)
    shares = np.asarray(record["probe"]["unit_variance_explained"])
    assert np.all(np.diag(shares) > 0.8) and shares[~np.eye(len(shares), dtype=bool)].max() < 0.1
    assert record["probe"]["settings"]["num_train"] == 600 and record["probe"]["settings"]["num_test"] == 300
    assert main(["evaluate", *common, "--no-probe", "--out", str(tmp_path / "without.json")]) == 0
    assert "linear probe" not in capsys.readouterr().out
    assert "probe" not in json.loads((tmp_path / "without.json").read_text())
