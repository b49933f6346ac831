"""``disdiff import-original``: checkpoints in the original code's layout become disdiff runs with identical outputs.

The original-layout checkpoints are made from disdiff's own small modules, renamed to the
original's key names and conventions (tests/original_layout.py, written from the spec, section 10):
``model.diffusion_model.*``, EMA shadows with the dots removed, the Encoder4 ``Sequential`` indices,
decoder levels in reverse order, ``downsample``/``upsample``, and the part-embedding matrix
transposed (the original computes exp(Wᵀ − W)). The imported modules must then compute exactly
what the modules they were made from compute.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from original_layout import (
    DISDIFF_KL,
    DISDIFF_VQ,
    IMAGE_SIZE,
    NUM_UNITS,
    original_stage1_config,
    original_stage2_config,
    original_stage3_config,
    reference_disdiff,
    reference_ldm,
    save_disdiff_ldm,
    save_original,
    stage1_state,
    stage2_state,
    stage3_state,
)

from disdiff.cli.main import main

FACTORS = [2, 2, 2, 2, 2, 2]
DATASET_ARGS = ["--dataset", "shapes3d-synth", "--dataset-option", f"resolution={IMAGE_SIZE}",
                "--dataset-option", f"factor_sizes={FACTORS}"]
STAGE3_STEP, STAGE3_LR = 1234, 2.56e-4


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * 2 - 1


def _write_yaml(path, config) -> str:
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    return str(path)


def _import(tmp_path, ckpt, config, name: str, *extra: str) -> tuple[int, object]:
    out = tmp_path / name
    code = main(["import-original", str(ckpt), _write_yaml(tmp_path / f"{name}.yaml", config), "--out", str(out),
                 *DATASET_ARGS, *extra])
    return code, out


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def stage3(tmp_path_factory):
    """(reference stage-3 module, original-layout checkpoint, its original config, an imported run)."""
    root = tmp_path_factory.mktemp("stage3")
    ldm = reference_ldm("vq", seed=0)
    ref = reference_disdiff(save_disdiff_ldm(ldm, root / "ldm" / "checkpoints" / "last.ckpt"), seed=4)
    ckpt = save_original(root / "original" / "epoch=000005.ckpt", stage3_state(ref), STAGE3_STEP, epoch=5, lr=STAGE3_LR)
    config = original_stage3_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, run = _import(root, ckpt, config, "run")
    assert code == 0
    return ref, ckpt, config, run


def _load(run, use_ema: bool):
    from disdiff.api import DisDiff

    return DisDiff.load(run, use_ema=use_ema).module


# ---------------------------------------------------------------------------------------------
# the key mapping, against the names spec section 10 gives
# ---------------------------------------------------------------------------------------------
def test_key_names_of_spec_section_10():
    from disdiff.interop.original import ema_key, first_stage_key, image_encoder_key, unet_key

    assert ema_key("input_blocks.0.0.weight") == "model_ema.diffusion_modelinput_blocks00weight"
    assert ema_key("shift_output_blocks.11.0.cond_emb_layers.1.bias") == \
        "model_ema.diffusion_modelshift_output_blocks110cond_emb_layers1bias"
    assert unet_key("out.2.weight") == "model.diffusion_model.out.2.weight"
    # three levels (published ch_mult [1, 2, 4]): disdiff runs decoder.up.0 first (lowest resolution)
    assert first_stage_key("decoder.up.0.block.2.conv1.weight", 3) == "decoder.up.2.block.2.conv1.weight"
    assert first_stage_key("decoder.up.1.resample.conv.bias", 3) == "decoder.up.1.upsample.conv.bias"
    assert first_stage_key("decoder.up.2.block.0.nin_shortcut.weight", 3) == "decoder.up.0.block.0.nin_shortcut.weight"
    assert first_stage_key("encoder.down.1.resample.conv.weight", 3) == "encoder.down.1.downsample.conv.weight"
    assert first_stage_key("encoder.mid.attn_1.proj_out.weight", 3) == "encoder.mid.attn_1.proj_out.weight"
    assert first_stage_key("quantize.embedding.weight", 3) == "quantize.embedding.weight"
    assert image_encoder_key("features.0.weight") == "cond_stage_model.encoder.0.weight"
    assert image_encoder_key("features.9.running_var") == "cond_stage_model.encoder.9.running_var"
    assert image_encoder_key("features.11.conv3.weight") == "cond_stage_model.encoder.11.convs.1.weight"
    assert image_encoder_key("features.14.bn.num_batches_tracked") == \
        "cond_stage_model.encoder.14.convs.2.num_batches_tracked"
    assert image_encoder_key("features.14.conv1.bias") == "cond_stage_model.encoder.14.convs.4.bias"
    assert image_encoder_key("fc.weight") == "cond_stage_model.encoder.16.weight"


def test_every_original_ema_name_of_the_published_denoiser_is_distinct():
    # the dots are removed, so two parameters could in principle share a name; the published
    # shift decoder (12 output blocks, 3 layers each) must not
    from disdiff.interop.original import ema_key
    from disdiff.models.shift_decoder import DisDiffDenoiser
    from disdiff.models.unet import UNetModel

    unet = UNetModel(image_size=16, in_channels=3, model_channels=64, out_channels=3, num_res_blocks=2,
                     attention_resolutions=[1, 2, 4], channel_mult=[1, 2, 4, 4], num_heads=8)
    names = [n for n, _ in unet.named_parameters()]
    names += [n for n, p in DisDiffDenoiser(unet, 6, 32).named_parameters() if p.requires_grad]
    assert len({ema_key(n) for n in names}) == len(names)


# ---------------------------------------------------------------------------------------------
# stage 3
# ---------------------------------------------------------------------------------------------
def test_stage3_layout_is_the_originals(stage3):
    # the test checkpoint itself follows spec 10 (guards the helper against drifting to disdiff's names)
    _, ckpt, _, _ = stage3
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    for key in ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.shift_out.2.weight",
                "model.diffusion_model.part_latents.weight", "model_ema.diffusion_modelshift_out2weight", "model_ema.num_updates",
                "cond_stage_model.encoder.0.weight", "cond_stage_model.encoder.11.convs.1.weight",
                "cond_stage_model.encoder.14.convs.4.weight", "cond_stage_model.encoder.16.weight",
                "first_stage_model.encoder.down.0.downsample.conv.weight", "first_stage_model.decoder.up.1.upsample.conv.weight",
                "first_stage_model.quantize.embedding.weight", "scale_factor", "betas", "logvar"):
        assert key in state, key
    # decoder level 0 is the highest resolution (32 channels), level 1 the lowest (64)
    assert state["first_stage_model.decoder.up.0.block.0.conv2.weight"].shape[0] == 32
    assert state["first_stage_model.decoder.up.1.block.0.conv2.weight"].shape[0] == 64
    assert not any(k.startswith(("denoiser.", "encoder.features", "ema.")) for k in state)


def test_stage3_import_gives_identical_eps_fields_loss_and_ddim_step(stage3):
    ref, _, _, run = stage3
    imported = _load(run, use_ema=False)
    assert imported.denoiser.part_latents.released_convention is True
    assert imported.hparams["released_part_convention"] is True and imported.hparams["use_ema_unet"] is False
    assert float(imported.scale_factor) == float(ref.scale_factor)
    # the stored matrix is the transpose, the codes are the same
    assert not torch.equal(imported.denoiser.part_latents.weight, ref.denoiser.part_latents.weight)
    assert torch.equal(imported.denoiser.part_latents(), ref.denoiser.part_latents())

    x = _images(6)
    g = torch.Generator().manual_seed(7)
    t = torch.tensor([0, 1, 250, 500, 750, 999])
    noise = torch.randn((6, *ref.latent_shape), generator=g)
    concept = torch.tensor([0, 1, 2, 2, 1, 0])
    z_t = torch.randn((6, *ref.latent_shape), generator=g)
    for module in (ref, imported):
        module.eval()
    with torch.no_grad():
        z = ref.encode_representation(x)
        assert torch.equal(imported.encode_representation(x), z)
        eps_ref = ref.denoiser.unet(z_t, t)
        assert eps_ref.abs().max() > 1e-3
        assert torch.equal(imported.denoiser.unet(z_t, t), eps_ref)
        pred_ref, g_ref = ref.denoiser(z_t, t, z)
        pred_imp, g_imp = imported.denoiser(z_t, t, z)
        assert g_ref.shape[1] == NUM_UNITS and all(g_ref[:, k].abs().max() > 1e-4 for k in range(NUM_UNITS))
        assert torch.equal(pred_imp, pred_ref) and torch.equal(g_imp, g_ref)

    # the stage-3 loss (train mode: BN batch statistics for z, running statistics in the re-encoder),
    # in float32 like the original (the imported config has the published precision switches:
    # bf16 for the denoiser on a CPU with native bf16, float32 for the disentangling path)
    assert imported.autocast_bf16 == "auto" and imported.autocast_bf16_dis_path is False
    imported.autocast_bf16 = False
    for module in (ref, imported):
        module.train()
    out_ref = ref.compute_losses(x, t=t, noise=noise, concept=concept)
    out_imp = imported.compute_losses(x, t=t, noise=noise, concept=concept)
    assert float(out_ref["loss_dis"]) > 0
    for key in ("loss_rec", "loss_dis", "loss"):
        assert torch.equal(out_imp[key], out_ref[key]), key

    # a DDIM step (two steps at t = 501 and 1, eta 1, fixed x_T and noise), decoded
    from disdiff.inference import generate

    for module in (ref, imported):
        module.eval()
    x_T = torch.randn((6, *ref.latent_shape), generator=g)
    with torch.no_grad():
        z = ref.encode_representation(x)
        a = generate(ref, z, steps=2, eta=1.0, x_T=x_T, seed=3)
        b = generate(imported, z, steps=2, eta=1.0, x_T=x_T, seed=3)
    assert torch.equal(a, b)


def test_stage3_import_carries_the_ema_shift_decoder(stage3):
    ref, _, _, run = stage3
    imported = _load(run, use_ema=True)  # the EMA weights copied into the shift decoder
    x = _images(4, seed=1)
    t = torch.tensor([10, 300, 600, 990])
    ref.eval()
    with torch.no_grad(), ref.ema_scope():
        z = ref.encode_representation(x)
        z_t = torch.randn((4, *ref.latent_shape), generator=torch.Generator().manual_seed(2))
        _, g_ref = ref.denoiser(z_t, t, z)
    with torch.no_grad():
        _, g_live = ref.denoiser(z_t, t, z)
        _, g_imp = imported.denoiser(z_t, t, z)
    assert not torch.equal(g_ref, g_live)  # the EMA differs from the live weights, so this checks the EMA keys
    assert torch.equal(g_imp, g_ref)
    assert int(imported.ema.num_updates) == 57 and imported.ema.num_updates.dtype == torch.int64


def test_imported_stage3_run_is_a_normal_run(stage3):
    _, ckpt, _, run = stage3
    config = OmegaConf.load(run / "configs" / "config.yaml")
    assert config.model.target == "disdiff.training.disdiff_module.DisDiffModule"
    assert config.model.params.released_part_convention is True and config.model.params.use_ema_unet is False
    assert config.model.params.autocast_bf16_dis_path is False
    assert config.data.params.dataset == "shapes3d-synth" and config.data.params.batch_size == 4
    assert (run / "configs" / "original-config.yaml").is_file()
    meta = json.loads((run / "run.json").read_text())["invocations"][0]
    assert meta["imported_from"]["original_global_step"] == STAGE3_STEP and meta["stage"] == "disdiff"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == STAGE3_STEP and saved["epoch"] == 5
    # the original run's learning rate, in both of stage 3's parameter groups (shift decoder, encoder;
    # encoder_lr_multiplier 1 as published)
    assert saved["lr_schedulers"][0]["base_lrs"] == [STAGE3_LR, STAGE3_LR]
    assert saved["lr_schedulers"][0]["last_epoch"] == STAGE3_STEP  # and its warm-up position
    assert not list(run.parent.glob(".run.importing-*"))


def test_export_evaluate_and_resume_on_the_imported_run(stage3, tmp_path):
    import shutil

    _, _, _, source = stage3
    run = tmp_path / "run"
    shutil.copytree(source, run)
    assert main(["export", str(run), "--batch-size", "16", "--no-progress"]) == 0
    npz = run / "representations" / f"step={STAGE3_STEP:08d}.npz"
    with np.load(npz) as data:
        assert data["latents"].shape == (64, NUM_UNITS, 4) and int(data["global_step"]) == STAGE3_STEP
    assert main(["evaluate", str(run), "--metrics", "mig", "--set", "mig.num_train=500"]) == 0
    assert (run / "metrics" / f"step={STAGE3_STEP:08d}.json").is_file()
    assert main(["swap", str(run), "--indices", "0,5", "--steps", "2", "--out", str(tmp_path / "swap.png")]) == 0
    assert main(["traverse", str(run), "--index", "3", "--steps", "2", "--values=-1,0,1", "--latents", str(npz)]) == 0

    # a fresh start from the imported config would freeze random networks: refused, nothing written
    code = main(["train", "-b", str(run / "configs" / "config.yaml"), "--run-dir", str(tmp_path / "fresh")])
    assert code == 1 and not (tmp_path / "fresh").exists()

    # train -r continues at the original's step, with its learning rate and warm-up position
    code = main(["train", "-r", str(run), "--max-steps", str(STAGE3_STEP + 1), "--accelerator", "cpu",
                 "data.params.val_size=4", "data.params.num_workers=0", "lightning.trainer.limit_val_batches=0",
                 "model.params.log_ddim_steps=2",  # the final image grid; the published 200 steps take ~20 s here
                 "lightning.trainer.enable_progress_bar=false", "lightning.trainer.enable_model_summary=false"])
    assert code == 0
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == STAGE3_STEP + 1
    expected = STAGE3_LR * (1e-6 + (1 - 1e-6) * (STAGE3_STEP + 1) / 10000)
    assert resumed["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(expected, rel=1e-9)
    assert resumed["optimizer_states"][0]["state"]  # one AdamW step was taken


def test_the_original_flag_load_ema_ckpt_false_means_ema_weights(stage3, tmp_path):
    _, ckpt, _, _ = stage3
    code, run = _import(tmp_path, ckpt, original_stage3_config(load_ema_ckpt=False), "run_ema")
    assert code == 0
    assert OmegaConf.load(run / "configs" / "config.yaml").model.params.use_ema_unet is True


# ---------------------------------------------------------------------------------------------
# bad checkpoints: one error listing every problem, nothing written
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change", ["missing", "extra", "misshaped"])
def test_bad_keys_give_one_error_and_write_nothing(stage3, tmp_path, capsys, change):
    _, ckpt, config, _ = stage3
    original = torch.load(ckpt, weights_only=True)
    state = original["state_dict"]
    if change == "missing":
        del state["model.diffusion_model.shift_out.2.weight"]
        del state["cond_stage_model.encoder.16.bias"]
        expected = ["missing keys (2)", "model.diffusion_model.shift_out.2.weight", "cond_stage_model.encoder.16.bias"]
    elif change == "extra":
        state["model.diffusion_model.extra_block.weight"] = torch.zeros(3)
        expected = ["unexpected keys (1)", "model.diffusion_model.extra_block.weight"]
    else:
        state["model.diffusion_model.part_latents.weight"] = torch.zeros(NUM_UNITS, NUM_UNITS)
        expected = ["mis-shaped keys (1)", "model.diffusion_model.part_latents.weight: (3, 3), expected (64, 64)"]
    bad = tmp_path / "bad.ckpt"
    torch.save(original, bad)
    capsys.readouterr()
    code, run = _import(tmp_path, bad, config, "run_bad")
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("disdiff import-original: error: checkpoint ") and str(bad) in err
    for text in expected:
        assert text in err, (text, err)
    assert "nothing was written" in err
    assert not run.exists() and not list(tmp_path.glob(".run_bad*"))


def test_a_config_that_does_not_describe_the_checkpoint_is_named(stage3, tmp_path, capsys):
    _, ckpt, config, _ = stage3
    changed = json.loads(json.dumps(config))
    changed["model"]["params"]["linear_end"] = 0.012  # another schedule: the checkpoint's betas disagree
    code, run = _import(tmp_path, ckpt, changed, "run_schedule")
    err = capsys.readouterr().err
    assert code == 1 and "values that disagree with the config" in err and "betas (max |difference|" in err
    assert not run.exists()

    changed = json.loads(json.dumps(config))
    changed["model"]["params"]["unet_config"]["params"]["model_channels"] = 64
    code, run = _import(tmp_path, ckpt, changed, "run_width")
    err = capsys.readouterr().err
    assert code == 1 and "mis-shaped keys" in err and "model.diffusion_model.input_blocks.0.0.weight" in err
    assert not run.exists()


def test_unknown_and_unsupported_config_settings_are_listed_together(stage3, tmp_path, capsys):
    _, ckpt, config, _ = stage3
    changed = json.loads(json.dumps(config))
    changed["model"]["params"]["my_new_flag"] = True
    changed["model"]["params"]["parameterization"] = "x0"
    changed["model"]["params"]["unet_config"]["params"]["use_spatial_transformer"] = True
    changed["model"]["params"]["first_stage_config"]["params"]["ddconfig"]["tanh_out"] = True
    changed["model"]["params"]["first_stage_config"]["params"]["remap_file"] = "x.npy"
    code, run = _import(tmp_path, ckpt, changed, "run_cfg")
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("disdiff import-original: error: original config ")
    for text in ("keys the importer does not know (2): ", "model.params.my_new_flag",
                 "model.params.first_stage_config.params.remap_file",
                 "model.params.first_stage_config.params.ddconfig.tanh_out = True",
                 "model.params.parameterization = 'x0' (disdiff implements 'eps')",
                 "model.params.unet_config.params.use_spatial_transformer = True"):
        assert text in err, (text, err)
    assert not run.exists()


def test_refuses_an_existing_output_and_an_unsafe_checkpoint(stage3, tmp_path, capsys):
    _, ckpt, config, run = stage3
    code = main(["import-original", str(ckpt), _write_yaml(tmp_path / "c.yaml", config), "--out", str(run), *DATASET_ARGS])
    assert code == 1 and "exists and is not an empty directory" in capsys.readouterr().err

    import argparse

    evil = tmp_path / "evil.ckpt"  # a pickled object other than tensors and plain data
    torch.save({"state_dict": {}, "payload": argparse.Namespace(x=1)}, evil)
    code, out = _import(tmp_path, evil, config, "run_evil")
    assert code == 1 and "weights_only" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------------
# stages 1 and 2
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vq", "kl"])
def test_stage1_import_reconstructs_identically(tmp_path, kind):
    from disdiff.config import instantiate_from_config
    from disdiff.models.autoencoder import load_first_stage
    from disdiff.models.autoencoder.discriminator import NLayerDiscriminator

    torch.manual_seed(0)
    ref = instantiate_from_config(DISDIFF_VQ if kind == "vq" else DISDIFF_KL).eval()
    disc = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=1)  # a PatchGAN small enough for 16x16 images
    loss_state = {"discriminator." + k: v for k, v in disc.state_dict().items()}
    loss_state["perceptual_loss.net.slice1.0.weight"] = torch.zeros(2)  # LPIPS entries: known, not needed
    if kind == "kl":
        loss_state["logvar"] = torch.zeros(())
    ckpt = save_original(tmp_path / "ae.ckpt", stage1_state(ref, loss_state), global_step=40, lr=4.5e-6 * 256)
    config = original_stage1_config(kind)
    config["model"]["params"]["lossconfig"]["params"].update({"disc_num_layers": 1, "disc_ndf": 8})
    code, run = _import(tmp_path, ckpt, config, "run1")
    assert code == 0
    config = OmegaConf.load(run / "configs" / "config.yaml")
    assert config.model.target == "disdiff.training.autoencoder_module.AutoencoderModule"
    assert config.model.base_learning_rate == pytest.approx(9.0e-6)  # 4.5e-6 x accumulate 2, as the packaged configs
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 80  # two optimiser steps per batch in disdiff
    assert torch.equal(saved["state_dict"]["loss.discriminator.main.0.weight"], disc.state_dict()["main.0.weight"])

    model = load_first_stage(OmegaConf.to_container(config.model.params.autoencoder_config), run / "checkpoints" / "last.ckpt")
    x = _images(3)
    with torch.no_grad():
        if kind == "vq":
            h = ref.encode_to_latent(x)
            assert torch.equal(model.encode_to_latent(x), h)
            assert torch.equal(model.decode_latent(h), ref.decode_latent(h))
            assert torch.equal(model.decode_latent(h, quantize=False), ref.decode_latent(h, quantize=False))
        else:
            assert torch.equal(model.encode(x).mean, ref.encode(x).mean)
            assert torch.equal(model.encode(x).logvar, ref.encode(x).logvar)
            h = ref.encode(x).mean
            assert torch.equal(model.decode_latent(h), ref.decode_latent(h))

    # train -r: one more batch is two more optimiser steps
    code = main(["train", "-r", str(run), "--max-steps", "82", "--accelerator", "cpu", "data.params.val_size=4",
                 "data.params.num_workers=0", "lightning.trainer.limit_val_batches=0",
                 "lightning.trainer.enable_progress_bar=false", "lightning.trainer.enable_model_summary=false",
                 "lightning.image_logger.every_n_train_steps=0"])
    assert code == 0
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 82
    assert [g["lr"] for o in resumed["optimizer_states"] for g in o["param_groups"]] == [4.5e-6 * 256] * 2


def test_stage2_import_gives_identical_eps_raw_and_ema(tmp_path):
    from disdiff.training.ldm_loading import load_pretrained_ldm

    ref = reference_ldm("kl", seed=1, scale_factor=0.6)
    state = stage2_state(ref)
    assert "model_ema.diffusion_modelinput_blocks00weight" in state  # spec 10's example name
    ckpt = save_original(tmp_path / "ldm.ckpt", state, global_step=321, lr=None)  # weights only, no optimiser
    code, run = _import(tmp_path, ckpt, original_stage2_config("kl"), "run2")
    assert code == 0
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    # no recorded optimiser: lr = batch 4 x base 2e-6 (scale_lr, one device), warm-up at step 321
    assert saved["lr_schedulers"][0]["base_lrs"] == [pytest.approx(8e-6)]
    assert saved["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(8e-6 * (1e-6 + (1 - 1e-6) * 0.0321))
    z_t = torch.randn((3, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([5, 400, 900])
    for use_ema in (False, True):
        loaded = load_pretrained_ldm(run / "checkpoints" / "last.ckpt", use_ema=use_ema)
        assert loaded["scale_factor"] == pytest.approx(0.6) and loaded["global_step"] == 321
        with torch.no_grad():
            if use_ema:
                with ref.ema.average_parameters(ref.unet):
                    expected = ref.unet(z_t, t)
            else:
                expected = ref.unet(z_t, t)
            assert torch.equal(loaded["unet"](z_t, t), expected), use_ema
        x = _images(2)
        h = ref.first_stage.encode(x).mean
        assert torch.equal(loaded["first_stage"].decode_latent(h), ref.first_stage.decode_latent(h))
    with torch.no_grad():
        assert not torch.equal(loaded["unet"](z_t, t), ref.unet(z_t, t))  # EMA differs from raw: the test can tell

    # the imported stage 2 is a stage-2 run that a stage-3 config can start from
    from disdiff.training.disdiff_module import DisDiffModule

    module = DisDiffModule(ldm_ckpt=str(run), encoder_config={"width": 8}, num_units=3, unit_dim=4)
    assert float(module.scale_factor) == pytest.approx(0.6)
