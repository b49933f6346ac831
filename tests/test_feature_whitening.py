"""Opt-in running ZCA whitening of the encoder's trunk features (models/feature_whitening.py)."""

import pytest
import torch

from disdiff.models.feature_whitening import FixedWhitening, RunningWhitening, zca_matrix
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


# -- the fixed whitening of the DPM head's frozen features (FixedWhitening, zca_matrix) --------------------

def _moments(h):
    h = h.double()
    return len(h), h.sum(0), h.T @ h


def test_fixed_whitening_is_the_identity_until_fitted_then_white():
    torch.manual_seed(0)
    mixing = torch.randn(8, 8) * torch.tensor([5.0, 3, 1, 1, 0.5, 0.3, 0.2, 0.1])[:, None]
    layer = FixedWhitening(8, eps=1e-6)
    h = torch.randn(5, 8)
    assert torch.equal(layer(h), h) and not bool(layer.fitted)
    layer.fit(*_moments(_correlated(20000, 1, mixing)))
    assert bool(layer.fitted)
    out = layer(_correlated(20000, 2, mixing))  # fresh draws: the fit generalises
    assert torch.allclose(out.mean(0), torch.zeros(8), atol=0.05)
    assert torch.allclose(torch.cov(out.T), torch.eye(8), atol=0.05)


def test_fixed_whitening_from_summed_moments_equals_the_fit_on_all_data():
    # the moments of two shards (two batches, or two processes of a distributed run) add up
    h = _correlated(300, 3, torch.randn(6, 6, generator=torch.Generator().manual_seed(4)))
    whole, shards = FixedWhitening(6), FixedWhitening(6)
    whole.fit(*_moments(h))
    (n1, s1, o1), (n2, s2, o2) = _moments(h[:100]), _moments(h[100:])
    shards.fit(n1 + n2, s1 + s2, o1 + o2)
    assert torch.allclose(whole.mean, h.mean(0), atol=1e-5)
    assert torch.allclose(whole.matrix, shards.matrix, atol=1e-5) and torch.allclose(whole.mean, shards.mean, atol=1e-6)


def test_the_eigenvalue_floor_damps_directions_below_it():
    cov = torch.diag(torch.tensor([4.0, 1.0, 1e-6]))
    matrix = zca_matrix(cov, eps=0.1)  # floor 0.1 x mean λ ≈ 0.167
    floor = 0.1 * cov.diagonal().mean()
    assert torch.allclose(matrix.diagonal().float(), (cov.diagonal() + floor).rsqrt(), atol=1e-6)
    assert matrix[2, 2] < floor.rsqrt() * 1.0001  # a near-empty direction is not amplified beyond 1/sqrt(floor)
    with pytest.raises(ValueError, match="eps"):
        FixedWhitening(3, eps=0.0)
    with pytest.raises(ValueError, match="at least 2"):
        FixedWhitening(3).fit(1, torch.zeros(3), torch.zeros(3, 3))
