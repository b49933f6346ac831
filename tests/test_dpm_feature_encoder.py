"""The opt-in image encoder on the frozen stage-1/2 networks' features (``encoder_config.backbone: dpm``):
what it trains, where gradients go, that it round-trips through a checkpoint, and its config errors."""

import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from disdiff_support import (IMAGE_SIZE, ImageBatches, ImageSet, count_feature_calls, make_ldm_checkpoint,
                             make_module, random_images, randomize_shift_output, save_module_checkpoint)
from torch.utils.data import DataLoader

from disdiff.api import DisDiff
from disdiff.config import ConfigError
from disdiff.models.disentangling_loss import FrozenReencoder
from disdiff.models.dpm_feature_encoder import DPMFeatureEncoder
from disdiff.training.deviations import deviations_in_use
from disdiff.training.encoder_setup import fit_feature_whitening

DPM = {"backbone": "dpm", "hidden": 16}


def test_only_the_head_is_the_encoders_own(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_config=DPM)
    encoder = module.encoder
    assert isinstance(encoder, DPMFeatureEncoder)
    assert all(name.startswith("head.") for name, _ in encoder.named_parameters())
    assert all(key.startswith("encoder.head.") for key in module.state_dict() if key.startswith("encoder."))
    x = random_images(4)
    z = encoder(x)
    assert z.shape == (4, module.num_units * module.unit_dim)
    assert torch.equal(z, encoder(x))  # deterministic: a clean latent at t = 0, no noise draw
    assert encoder.encode_units(x).shape == (4, module.num_units, module.unit_dim)


def test_gradients_reach_the_head_and_the_images_but_no_frozen_weight(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_config=DPM)
    x = random_images(4).requires_grad_(True)
    module.encoder(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.encoder.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0  # the disentangling loss re-encodes decoded images
    frozen = list(module.first_stage.parameters()) + list(module.denoiser.unet.parameters())
    assert frozen and all(p.grad is None for p in frozen)


def test_the_frozen_networks_stay_in_eval_mode(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_config=DPM)
    module.train()
    FrozenReencoder("train")(module.encoder, random_images(3))
    module.encoder.train(True)
    assert not module.first_stage.training and not module.denoiser.unet.training


@pytest.mark.parametrize("train_reencoder", [False, True])
def test_the_losses_train_with_either_re_encoder(ldm_ckpt, train_reencoder):
    module = make_module(ldm_ckpt, encoder_config=DPM, dis_weight=0.5, train_reencoder=train_reencoder)
    randomize_shift_output(module)  # G = 0 at initialisation gives the disentangling loss zero weight
    out = module.compute_losses(random_images(6), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss_dis"].item() > 0
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.encoder.parameters())


def test_a_training_step_reads_the_code_from_its_own_latent_with_the_same_losses_and_gradients(ldm_ckpt, monkeypatch):
    module = make_module(ldm_ckpt, encoder_config=DPM, dis_weight=0.5, train_reencoder=True)
    randomize_shift_output(module)
    assert module.encoder.reads_training_latent  # the test stage 1 is a VQ autoencoder
    x = random_images(6)

    def step():
        module.zero_grad(set_to_none=True)
        encoded = []
        hook = module.first_stage.encoder.register_forward_hook(lambda *args: encoded.append(1))
        try:
            out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
        finally:
            hook.remove()
        out["loss"].backward()
        return out, {n: p.grad.clone() for n, p in module.encoder.named_parameters()}, len(encoded)

    shared, shared_grads, shared_calls = step()
    monkeypatch.setattr(DPMFeatureEncoder, "reads_training_latent", property(lambda self: False))
    direct, direct_grads, direct_calls = step()
    assert shared_calls == direct_calls - 1  # the training images went through stage 1's encoder once
    assert torch.equal(shared["z"], direct["z"])
    for key in ("loss", "loss_rec", "loss_dis"):
        assert torch.equal(shared[key], direct[key]), key
    assert all(torch.equal(shared_grads[n], direct_grads[n]) for n in direct_grads)


def test_a_checkpoint_restores_the_same_codes_and_the_image_geometry(ldm_ckpt, tmp_path):
    module = make_module(ldm_ckpt, encoder_config=DPM, seed=0).eval()
    path = save_module_checkpoint(module, tmp_path / "run" / "checkpoints" / "step=00000000.ckpt")
    x = random_images(4)
    assert not torch.allclose(make_module(ldm_ckpt, encoder_config=DPM, seed=1).encoder(x), module.encoder(x))
    model = DisDiff.load(path)
    assert model.image_shape == (3, IMAGE_SIZE, IMAGE_SIZE)  # what export checks the data against
    with torch.no_grad():
        assert torch.allclose(model.encode(x), module.encode_representation(x), atol=1e-6)


def test_standardize_code_fixes_the_codes_scale_and_re_encodes_with_running_statistics(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_config={**DPM, "standardize_code": True}, seed=0)
    encoder = module.encoder.train()
    x = random_images(16)
    z = encoder(x)
    assert torch.allclose(z.mean(dim=0), torch.zeros(z.shape[1]), atol=1e-5)
    # Unit variance up to BatchNorm's eps (the fresh head's outputs have a small variance v: v / (v + eps)).
    assert torch.allclose(z.var(dim=0, unbiased=False), torch.ones(z.shape[1]), atol=0.02)
    with torch.no_grad():  # the bound: scaling the head's output leaves the code unchanged
        encoder.head[-1].weight.mul_(10.0)
        encoder.head[-1].bias.mul_(10.0)
    assert torch.allclose(encoder(x), z, atol=0.02)
    # Re-encodings of generated images: the running statistics, which they must not update.
    stats = encoder.code_norm.running_mean.clone(), encoder.code_norm.running_var.clone()
    generated = random_images(5)
    code = encoder(generated, running_code_stats=True)
    assert torch.equal(encoder.code_norm.running_mean, stats[0]) and torch.equal(encoder.code_norm.running_var, stats[1])
    expected = (encoder.head(encoder.features(generated)) - stats[0]) / torch.sqrt(stats[1] + encoder.code_norm.eps)
    assert torch.allclose(code, expected, atol=1e-5)
    assert {key for key in module.state_dict() if key.startswith("encoder.code_norm.")} >= {
        "encoder.code_norm.running_mean", "encoder.code_norm.running_var"}


def test_the_live_re_encoder_uses_the_running_statistics(ldm_ckpt, monkeypatch):
    module = make_module(ldm_ckpt, encoder_config={**DPM, "standardize_code": True}, dis_weight=0.5,
                         train_reencoder=True).train()
    randomize_shift_output(module)
    calls = []
    head = DPMFeatureEncoder.code_from_features

    def spy(self, features, running_code_stats=False):
        calls.append(running_code_stats)
        return head(self, features, running_code_stats)

    monkeypatch.setattr(DPMFeatureEncoder, "code_from_features", spy)
    out = module.compute_losses(random_images(6), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss_dis"].item() > 0
    assert calls[0] is False and True in calls  # the real batch, then the re-encodings


def test_it_is_listed_as_a_deviation():
    assert deviations_in_use({"encoder_config": DPM}) == {"encoder_config.backbone": "dpm",
                                                          "encoder_config.hidden": 16}
    assert deviations_in_use({"encoder_config": {"width": 64, "resolution": 32, **DPM}}) == {
        "encoder_config.backbone": "dpm", "encoder_config.hidden": 16}  # the CNN's keys are not its deviations
    assert deviations_in_use({"encoder_config": {**DPM, "standardize_code": True}})["encoder_config.standardize_code"]
    assert deviations_in_use({"encoder_config": {**DPM, "whiten_features": True}})["encoder_config.whiten_features"]
    # switches that are off are not deviations in use
    assert deviations_in_use({"encoder_config": {**DPM, "standardize_code": False, "whiten_features": False,
                                                 "whitening_eps": 0.1}}) == {"encoder_config.backbone": "dpm",
                                                                             "encoder_config.hidden": 16}
    assert deviations_in_use({"encoder_config": {"width": 8, "backbone": "cnn"}}) == {}


@pytest.mark.parametrize("config, kwargs, message", [
    ({"backbone": "resnet"}, {}, "encoder_config.backbone must be one of"),
    ({"backbone": "dpm", "depth": 3}, {}, "takes the keys hidden, feature_t, standardize_code"),
    ({"backbone": "dpm", "resolution": 32}, {}, "encoder_config.resolution=32"),
    ({"backbone": "dpm", "in_channels": 1}, {}, "encoder_config.in_channels=1"),
    ({"backbone": "dpm", "hidden": 0}, {}, "hidden must be >= 1"),
    ({"backbone": "dpm", "whiten_features": True, "whitening_eps": 0}, {}, "whitening_eps must be > 0"),
    ({"backbone": "dpm"}, {"code_kl_weight": 0.1}, "code_kl_weight > 0 needs the CNN image encoder"),
])
def test_bad_settings_name_the_key(ldm_ckpt, config, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_module(ldm_ckpt, encoder_config=config, **kwargs)


def test_an_export_through_the_feature_cache_equals_the_direct_one_and_computes_features_once(
        ldm_ckpt, tmp_path, monkeypatch):
    from disdiff.evaluation.export import FrozenFeatureCache, export_representations

    data = ImageSet(10)
    first = DisDiff(make_module(ldm_ckpt, encoder_config={**DPM, "standardize_code": True}, seed=0))
    second = DisDiff(make_module(ldm_ckpt, encoder_config={**DPM, "standardize_code": True}, seed=1))
    direct = [export_representations(model, data, batch_size=4, progress=False) for model in (first, second)]
    assert not np.allclose(direct[0], direct[1])  # two heads, so a cache that mixed them up would show
    other = DisDiff(make_module(make_ldm_checkpoint(tmp_path / "other.ckpt", seed=7), encoder_config=DPM, seed=0))

    calls = count_feature_calls(monkeypatch)
    cache = FrozenFeatureCache()
    cached = [export_representations(model, data, batch_size=4, progress=False, feature_cache=cache)
              for model in (first, second)]
    for got, want in zip(cached, direct):
        assert got.shape == (10, 3, 4) and np.allclose(got, want, atol=1e-5)
    assert sum(calls) == 10  # the second checkpoint, with the same frozen networks, ran only its head
    # Other frozen networks give other features: computed again, not served from the cache.
    assert np.allclose(export_representations(other, data, 4, False, feature_cache=cache),
                       export_representations(other, data, 4, False), atol=1e-5)
    assert sum(calls) == 10 + 10 + 10  # other's features into the cache, then its direct export
    # The published CNN encoder ignores the cache.
    cnn = DisDiff(make_module(ldm_ckpt, seed=0))
    assert np.allclose(export_representations(cnn, data, 4, False, feature_cache=cache),
                       export_representations(cnn, data, 4, False))


def test_the_cnn_can_be_chosen_over_a_config_that_carries_the_heads_keys(ldm_ckpt, caplog):
    from disdiff.models.image_encoder import ImageEncoder

    # The small config sets backbone: dpm and hidden: 256; --set ...backbone=cnn cannot delete hidden.
    module = make_module(ldm_ckpt, encoder_config={**DPM, "backbone": "cnn", "feature_t": 0, "width": 8})
    assert isinstance(module.encoder, ImageEncoder) and module.encoder.width == 8
    assert "ignores the DPM-feature encoder's keys ['feature_t', 'hidden']" in caplog.text


# -- the opt-in fixed whitening of the frozen features (whiten_features) ----------------------------------

WHITE = {**DPM, "whiten_features": True, "whitening_images": 6}


def test_whitening_is_fitted_once_at_train_start_on_the_first_training_images(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_config=WHITE)
    whitening = module.encoder.whitening
    assert not bool(whitening.fitted)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    data = ImageBatches(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(data, batch_size=4))  # unshuffled: the first 6 images are data.x[:6]
    assert bool(whitening.fitted)
    with torch.no_grad():
        features = module.encoder.features(data.x[:6]).double()
    assert torch.allclose(whitening.mean.double(), features.mean(0), atol=1e-5)
    # the head reads the whitened features: the code is head(whitening(features))
    x = random_images(3)
    with torch.no_grad():
        expected = module.encoder.head(whitening(module.encoder.features(x)))
        assert torch.allclose(module.encoder(x), expected, atol=1e-6)
    assert not fit_feature_whitening(module.encoder, [data.x], lambda batch: batch)  # already fitted: left alone
    assert torch.allclose(whitening.mean.double(), features.mean(0), atol=1e-5)


def test_fitting_leaves_the_random_state_alone_and_adds_the_processes_moments(ldm_ckpt):
    encoder = make_module(ldm_ckpt, encoder_config=WHITE).encoder
    torch.manual_seed(7)
    state = torch.get_rng_state()
    loader = DataLoader(ImageBatches(8), batch_size=4, shuffle=True)  # a shuffled sampler draws a seed
    seen = []

    def twice(tensor):  # two processes holding the same moments
        seen.append(tensor)
        return 2 * tensor

    assert fit_feature_whitening(encoder, loader, lambda batch: batch["image"], twice)
    assert torch.equal(torch.get_rng_state(), state)
    assert float(seen[0]) == 6  # whitening_images of them, from the first two batches
    assert len(seen) == 3  # the count, the sum and the outer products were reduced


def test_a_checkpoint_keeps_the_fitted_whitening(ldm_ckpt, tmp_path):
    module = make_module(ldm_ckpt, encoder_config=WHITE).eval()
    assert fit_feature_whitening(module.encoder, [random_images(6, seed=9)], lambda batch: batch)
    assert {"encoder.whitening.mean", "encoder.whitening.matrix", "encoder.whitening.fitted"} <= set(module.state_dict())
    path = save_module_checkpoint(module, tmp_path / "run" / "checkpoints" / "step=00000000.ckpt")
    model = DisDiff.load(path)
    assert bool(model.module.encoder.whitening.fitted)
    x = random_images(4)
    with torch.no_grad():
        assert torch.allclose(model.encode(x), module.encode_representation(x), atol=1e-6)
