"""Tiny end to end: stages 1, 2 and 3 for a few steps each with ``disdiff train``, then export,
evaluate, swap and traverse with the command line, on a 16x16 shapes3d-synth grid."""

import csv
import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from disdiff.cli.main import main

FACTORS = [2, 2, 2, 2, 2, 2]
DATA = {"target": "disdiff.data.datamodule.GroundTruthDataModule",
        "params": {"dataset": "shapes3d-synth", "dataset_options": {"resolution": 16, "factor_sizes": FACTORS},
                   "batch_size": 4, "val_size": 4, "seed": 0}}
LIGHTNING = {"trainer": {"max_steps": 2, "accelerator": "cpu", "limit_val_batches": 1, "num_sanity_val_steps": 0,
                         "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1},
             "checkpoint": {"every_n_train_steps": 2},
             "image_logger": {"every_n_train_steps": 0}}
VQ = {"target": "disdiff.models.autoencoder.VQModel",
      "params": {"embed_dim": 3, "n_embed": 16,
                 "ddconfig": dict(double_z=False, z_channels=3, resolution=16, in_channels=3, out_ch=3, ch=8,
                                  ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0, num_groups=4)}}


def _write(path, config):
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    return str(path)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))
    yield


def test_three_stages_export_evaluate_swap_traverse(tmp_path):
    runs = tmp_path / "runs"
    stage1 = _write(tmp_path / "s1.yaml", {
        "model": {"target": "disdiff.training.autoencoder_module.AutoencoderModule", "base_learning_rate": 1e-4,
                  "params": {"autoencoder_config": VQ,
                             "loss_config": {"target": "disdiff.models.autoencoder.losses.VQLPIPSWithDiscriminator",
                                             "params": {"disc_start": 0, "disc_ndf": 8, "disc_num_layers": 1,
                                                        "perceptual_weight": 0.0}}}},
        "data": DATA, "lightning": LIGHTNING})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "-b", stage1, "--run-dir", str(runs / "s1")]) == 0
        stage2 = _write(tmp_path / "s2.yaml", {
            "model": {"target": "disdiff.training.ldm_module.LatentDiffusionModule", "base_learning_rate": 1e-4,
                      "params": {"first_stage_config": VQ, "first_stage_ckpt": str(runs / "s1/checkpoints/last.ckpt"),
                                 "warmup_steps": 1, "log_ddim_steps": 2,
                                 "unet_config": {"target": "disdiff.models.unet.UNetModel",
                                                 "params": dict(image_size=8, in_channels=3, out_channels=3,
                                                                model_channels=8, channel_mult=[1, 2], num_res_blocks=1,
                                                                attention_resolutions=[2], num_heads=2, num_groups=4)}}},
            "data": DATA, "lightning": LIGHTNING})
        assert main(["train", "-b", stage2, "--run-dir", str(runs / "s2")]) == 0

        from disdiff.config import PACKAGED_CONFIG_DIR

        packaged = OmegaConf.load(PACKAGED_CONFIG_DIR / "disdiff" / "shapes3d-synth-vq-small-dis.yaml")
        packaged.model.params.update({"ldm_ckpt": str(runs / "s2"), "num_units": 3, "unit_dim": 4,
                                      "encoder_config": {"width": 8, "resolution": 16, "in_channels": 3},
                                      "dis_reencode_latent": False,  # the CNN re-encodes images
                                      "warmup_steps": 1, "log_ddim_steps": 2,
                                      "dis_weight_ramp": [0, 1]})  # the loss from step 0 (the config's: 800)
        packaged.data = DATA
        packaged.lightning = LIGHTNING
        stage3 = _write(tmp_path / "s3.yaml", OmegaConf.to_container(packaged))
        assert main(["train", "-b", stage3, "--run-dir", str(runs / "s3"), "-dw", "0.5"]) == 0

    run3 = runs / "s3"
    metrics_lines = (run3 / "logs" / "metrics.csv").read_text().splitlines()
    for key in ("train/loss_rec", "train/loss_dis", "train/loss"):
        assert key in metrics_lines[0]
    rows = list(csv.DictReader(metrics_lines))
    dis = [float(v) for row in rows for k, v in row.items() if k.startswith("train/loss_dis") and v]
    assert dis and max(dis) > 0  # the disentangling path ran
    ckpt = torch.load(run3 / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["dis_weight"] == 0.5 and ckpt["global_step"] == 2

    # export: the whole dataset, canonical order, default path inside the run
    assert main(["export", str(run3), "--batch-size", "24", "--no-progress"]) == 0
    npz = run3 / "representations" / "step=00000002.npz"
    with np.load(npz, allow_pickle=False) as data:
        latents, step = data["latents"], int(data["global_step"])
    assert latents.shape == (64, 3, 4) and latents.dtype == np.float32 and step == 2
    from disdiff.api import DisDiff
    from disdiff.data.registry import load_dataset

    model = DisDiff.load(run3)
    dataset = load_dataset("shapes3d-synth", resolution=16, factor_sizes=FACTORS)
    rows = [0, 17, 63]
    assert np.allclose(latents[rows], model.encode(dataset.images(rows)).numpy(), atol=1e-5)
    # refuses to overwrite, and checks the geometry of another dataset
    assert main(["export", str(run3), "--no-progress"]) == 1
    assert main(["export", str(run3), "--dataset", "shapes3d-synth", "--dataset-option", "resolution=32",
                 "--dataset-option", f"factor_sizes={FACTORS}", "--out", str(tmp_path / "x.npz")]) == 1

    # evaluate (engineer D's command) reads the export
    if importlib.util.find_spec("disdiff.cli.evaluate") is not None:
        out = tmp_path / "metrics.json"
        code = main(["evaluate", str(npz), "--dataset", "shapes3d-synth", "--dataset-option", "resolution=16",
                     "--dataset-option", f"factor_sizes={FACTORS}", "--out", str(out), "--metrics", "mig",
                     "--set", "mig.num_train=500"])
        assert code == 0 and json.loads(out.read_text())

    # swap and traverse write PNGs of the expected size
    swap_png = tmp_path / "swap.png"
    assert main(["swap", str(run3), "--indices", "0,5,9", "--steps", "2", "--out", str(swap_png)]) == 0
    for path in (swap_png, tmp_path / "swap_partial.png"):
        w, h = Image.open(path).size
        assert (w, h) == (4 * 66 + 2, (2 + 3) * 66 + 2)  # 16 px images drawn as 64 px tiles, 2 px padding
    assert main(["traverse", str(run3), "--index", "3", "--steps", "2", "--values=-1,0,1",
                 "--latents", str(npz)]) == 0
    figures = list((run3 / "figures").glob("traverse-3_step=00000002.png"))
    assert len(figures) == 1 and Image.open(figures[0]).size == (4 * 66 + 2, 3 * 66 + 2)

    # units: one row per unit, JSON with the run's factors named, bad options refused
    units_json = tmp_path / "units.json"
    assert main(["units", str(run3), "--n", "16", "--batch-size", "8", "--json", str(units_json)]) == 0
    record = json.loads(units_json.read_text())
    assert record["global_step"] == 2 and len(record["units"]) == 3 and record["n"] == 16
    assert set(record["units"][0]["eta2"]) == set(load_dataset("shapes3d-synth", resolution=16,
                                                               factor_sizes=FACTORS).factor_names)
    assert all(u["field_rms"] >= 0 and 0 <= u["field_share"] <= 1 for u in record["units"])
    assert main(["units", str(run3), "--t-range", "600,100"]) == 1
    assert main(["units", str(run3), "--t-range", "abc"]) == 1

    # swap-check: one row per unit over the run's factors, JSON written, impossible sizes refused
    check_json = tmp_path / "swap_check.json"
    assert main(["swap-check", str(run3), "--pairs", "4", "--reader-images", "40", "--reader", "linear", "--steps", "2",
                 "--json", str(check_json)]) == 0
    record = json.loads(check_json.read_text())
    assert record["global_step"] == 2 and len(record["units"]) == 3 and np.shape(record["moved"]) == (3, 6)
    assert set(record["reader_accuracy"]) == set(load_dataset("shapes3d-synth", resolution=16,
                                                              factor_sizes=FACTORS).factor_names)
    assert main(["swap-check", str(run3), "--pairs", "20", "--reader-images", "40"]) == 1  # 80 > 64 images
    assert main(["swap-check", str(run3), "--pairs", "0"]) == 1
