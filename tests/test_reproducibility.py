"""The same seed and config give identical results from two runs on CPU: ``disdiff train`` (stage 3),
``disdiff export`` and ``disdiff evaluate`` twice at a tiny size, compared bit for bit."""

from __future__ import annotations

import json

import numpy as np
import torch
from test_faults_helpers import FACTORS, load_weights_only, make_stage3_run

from disdiff.cli.main import main

SETTINGS = ["mig.num_train=500", "beta_vae.num_train=200", "beta_vae.num_eval=100", "beta_vae.batch_size=16",
            "factor_vae.num_train=200", "factor_vae.num_eval=100", "factor_vae.num_variance_estimate=500",
            "factor_vae.batch_size=16", "dci.num_train=200", "dci.num_test=100"]


def _pipeline(root, seed):
    run = make_stage3_run(root, max_steps=3, seed=seed)
    npz = run / "representations" / "step=00000003.npz"
    assert main(["export", str(run), "--batch-size", "32", "--no-progress"]) == 0
    out = root / "metrics.json"
    args = ["evaluate", str(npz), "--dataset", "shapes3d-synth", "--dataset-option", "resolution=16",
            "--dataset-option", f"factor_sizes={FACTORS}", "--metrics", "beta_vae,factor_vae,dci,mig",
            "--threads", "1", "--out", str(out)]
    for setting in SETTINGS:
        args += ["--set", setting]
    assert main(args) == 0
    record = json.loads(out.read_text())
    with np.load(npz, allow_pickle=False) as data:
        latents = data["latents"]
    ckpt = load_weights_only(run / "checkpoints" / "last.ckpt")
    log = (run / "logs" / "metrics.csv").read_text()
    return record, latents, ckpt, log


def _without_timings(record):
    return {k: v for k, v in record.items() if k not in ("seconds", "representations")}


def test_same_seed_and_config_give_identical_metrics(tmp_path):
    a = _pipeline(tmp_path / "a", seed=7)
    b = _pipeline(tmp_path / "b", seed=7)
    record_a, record_b = _without_timings(a[0]), _without_timings(b[0])
    assert record_a == record_b, (record_a, record_b)
    assert json.dumps(record_a).count(".") > 4  # real numbers were compared
    assert np.array_equal(a[1], b[1])
    for key, value in a[2]["state_dict"].items():
        assert torch.equal(value, b[2]["state_dict"][key]), key
    assert a[3] == b[3]  # every logged training loss

    # a different seed trains different weights (the seed is what makes them equal)
    other = load_weights_only(make_stage3_run(tmp_path / "c", max_steps=3, seed=8) / "checkpoints" / "last.ckpt")
    assert not all(torch.equal(v, other["state_dict"][k]) for k, v in a[2]["state_dict"].items())
