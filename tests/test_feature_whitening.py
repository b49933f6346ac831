"""Opt-in running ZCA whitening of the encoder's trunk features (models/feature_whitening.py)."""

import pytest
import torch

from disdiff.models.feature_whitening import RunningWhitening
from disdiff.models.image_encoder import ImageEncoder


def _correlated(n, seed, mixing):
    return torch.randn(n, mixing.shape[0], generator=torch.Generator().manual_seed(seed)) @ mixing + 3.0


def test_starts_as_the_identity_and_eval_mode_does_not_update():
    layer = RunningWhitening(5).eval()
    h = torch.randn(7, 5)
    assert torch.allclose(layer(h), h, rtol=1e-3, atol=1e-6)  # up to the eps regulariser: 1/sqrt(1 + eps)
    layer(torch.randn(7, 5) * 10)
    assert torch.equal(layer.running_cov, torch.eye(5)) and torch.equal(layer.running_mean, torch.zeros(5))


def test_output_is_white_after_training_batches():
    torch.manual_seed(0)
    mixing = torch.randn(8, 8) * torch.tensor([5.0, 3, 1, 1, 0.3, 0.1, 0.05, 0.01])[:, None]  # very unequal variances
    layer = RunningWhitening(8, momentum=0.05, eps=1e-6).train()
    for step in range(400):
        layer(_correlated(64, step, mixing))
    out = layer.eval()(_correlated(20000, 10_000, mixing))
    assert torch.allclose(out.mean(0), torch.zeros(8), atol=0.05)
    assert torch.allclose(torch.cov(out.T), torch.eye(8), atol=0.1)


def test_gradient_reaches_the_input_not_the_statistics():
    layer = RunningWhitening(4).train()
    h = torch.randn(16, 4, requires_grad=True)
    layer(h).square().sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert not any(b.requires_grad for b in layer.buffers())
    with pytest.raises(ValueError, match="momentum"):
        RunningWhitening(4, momentum=0.0)


def test_encoder_option():
    plain = ImageEncoder(resolution=16, width=8, num_units=3, unit_dim=1)
    white = ImageEncoder(resolution=16, width=8, num_units=3, unit_dim=1, whiten_features=True)
    assert plain.whiten is None and isinstance(white.whiten, RunningWhitening)
    assert "whiten.running_cov" in white.state_dict() and "whiten.running_cov" not in plain.state_dict()
    assert white(torch.randn(4, 3, 16, 16)).shape == (4, 3)
    with pytest.raises(ValueError, match="whiten_features"):
        ImageEncoder(resolution=16, width=8, num_units=3, unit_dim=1, unit_branches=True, whiten_features=True)
