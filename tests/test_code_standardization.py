"""Opt-in code scale options of the image encoder: standardize_code (unit scale per dimension, re-encodings on running statistics) and readout_init_scale."""

import pytest
import torch
from disdiff_support import make_module, random_images

from disdiff.models.image_encoder import ImageEncoder


def _encoder(**kwargs) -> ImageEncoder:
    torch.manual_seed(0)
    return ImageEncoder(resolution=16, width=8, num_units=3, unit_dim=2, **kwargs)


def test_training_batches_come_out_standardised_and_the_default_is_unchanged():
    plain, standard = _encoder(), _encoder(standardize_code=True)
    assert plain.code_norm is None and not any(k.startswith("code_norm") for k in plain.state_dict())
    assert set(plain.state_dict()) < set(standard.state_dict())
    x = torch.randn(32, 3, 16, 16) * 2
    code = standard.train()(x)
    assert torch.allclose(code.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(code.var(0, unbiased=False), torch.ones(6), atol=1e-3)
    # the same weights without the option give the raw read-out, whose scale is not 1
    raw = plain.train()(x)
    assert not torch.allclose(raw.var(0, unbiased=False), torch.ones(6), atol=0.1)
    assert "standardize_code=True" in repr(standard) and "standardize_code" not in repr(plain)


def test_eval_mode_uses_running_statistics_and_does_not_update_them():
    encoder = _encoder(standardize_code=True)
    g = torch.Generator().manual_seed(1)
    encoder.train()
    for _ in range(200):  # the trunk's BatchNorms and the code's must both settle
        encoder(torch.randn(64, 3, 16, 16, generator=g))
    encoder.eval()
    before = encoder.code_norm.running_mean.clone()
    with torch.no_grad():
        code = encoder(torch.randn(2000, 3, 16, 16, generator=g))
    assert torch.equal(encoder.code_norm.running_mean, before)
    assert torch.allclose(code.mean(0), torch.zeros(6), atol=0.15)
    assert torch.allclose(code.std(0), torch.ones(6), atol=0.15)


def test_a_stochastic_code_is_rejected():
    with pytest.raises(ValueError, match="standardize_code"):
        _encoder(standardize_code=True, stochastic=True)


def test_live_reencodings_use_running_statistics_and_keep_the_gradient(ldm_ckpt):
    module = make_module(ldm_ckpt, unit_dim=1, train_reencoder=True,
                         encoder_config={"width": 8, "standardize_code": True}).train()
    norm = module.encoder.code_norm
    module.encoder(random_images(16))  # one training batch moves the running statistics off 0 / 1
    stats = norm.running_mean.clone(), norm.running_var.clone()
    images = random_images(8, seed=3).requires_grad_(True)
    code = module._reencode(images)
    assert norm.training  # restored
    assert torch.equal(norm.running_mean, stats[0]) and torch.equal(norm.running_var, stats[1])
    raw = module.encoder.fc(module.encoder._features(images)).flatten(1)  # trunk in the same (train) mode
    expected = (raw - stats[0]) / torch.sqrt(stats[1] + norm.eps)
    assert torch.allclose(code, expected, atol=1e-5)
    code.sum().backward()
    assert images.grad is not None and module.encoder.fc.weight.grad.abs().sum() > 0


def test_readout_init_scale_multiplies_only_the_initial_read_out():
    plain, quiet = _encoder(), _encoder(readout_init_scale=0.1)
    for name, value in plain.state_dict().items():
        expected = value * 0.1 if name.startswith("fc.") else value
        assert torch.allclose(quiet.state_dict()[name], expected), name
    x = torch.randn(8, 3, 16, 16)
    assert torch.allclose(quiet.eval()(x), 0.1 * plain.eval()(x), atol=1e-6)  # the read-out is linear
    with pytest.raises(ValueError, match="readout_init_scale"):
        _encoder(readout_init_scale=0.0)
