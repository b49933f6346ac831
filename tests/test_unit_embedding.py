"""The shift decoder's embedding of a unit's code: the published Linear by default, and the opt-in
Fourier-feature embedding (its features, what it can tell apart, and its place in the module)."""

import math

import pytest
import torch
from disdiff_support import (assert_gradient_reaches_only_the_trained_parts, make_module, random_images,
                             randomize_shift_output)
from torch import nn

from disdiff.config import ConfigError
from disdiff.models.unit_embedding import FourierUnitEmbedding, unit_embedding
from disdiff.training.deviations import deviations_in_use


def test_zero_frequencies_is_the_published_linear_layer():
    layer = unit_embedding(1, 16, 0)
    assert type(layer) is nn.Linear and layer.in_features == 1 and layer.out_features == 16
    with pytest.raises(ValueError, match="unit_fourier_features"):
        unit_embedding(1, 16, -1)


def test_features_are_the_code_and_its_sines_and_cosines():
    layer = FourierUnitEmbedding(unit_dim=2, out_dim=8, num_frequencies=3)
    z = torch.tensor([[0.5, -1.0]])
    phi = layer.features(z)
    assert phi.shape == (1, 2 * (1 + 2 * 3)) and layer.linear.in_features == 14
    omegas = [math.pi / 2, math.pi, 2 * math.pi]
    expected = [0.5, -1.0] + [math.sin(w * v) for v in (0.5, -1.0) for w in omegas] \
        + [math.cos(w * v) for v in (0.5, -1.0) for w in omegas]
    assert torch.allclose(phi[0], torch.tensor(expected), atol=1e-6)
    assert layer(torch.zeros(5, 3, 2)).shape == (5, 3, 8)  # any leading shape, as repre_embed is called
    assert "frequencies" not in layer.state_dict()  # fixed, rebuilt from F: nothing to load or train
    assert [name for name, _ in layer.named_parameters()] == ["linear.weight", "linear.bias"]


def test_close_values_get_distant_features_where_a_line_cannot_separate_them():
    # Four levels of a categorical factor at -1, -1/3, 1/3, 1: a linear read-out of one scalar can only
    # pick out an end level; of the Fourier features, a least-squares fit picks out each inner level.
    z = torch.tensor([[-1.0], [-1 / 3], [1 / 3], [1.0]])
    layer = FourierUnitEmbedding(1, 4, num_frequencies=2)
    for level in (1, 2):
        target = torch.zeros(4, 1)
        target[level] = 1.0
        line = torch.cat([z, torch.ones(4, 1)], 1)
        fourier = torch.cat([layer.features(z), torch.ones(4, 1)], 1)
        line_residual = (line @ torch.linalg.pinv(line) @ target - target).abs().max()
        fourier_residual = (fourier @ torch.linalg.pinv(fourier) @ target - target).abs().max()
        assert line_residual > 0.3 and fourier_residual < 1e-4


def test_the_module_uses_it_only_when_asked_and_it_trains(ldm_ckpt):
    published = make_module(ldm_ckpt, dis_weight=0.0, unit_dim=1)
    assert type(published.denoiser.repre_embed) is nn.Linear
    assert "denoiser.repre_embed.weight" in published.state_dict()

    module = make_module(ldm_ckpt, dis_weight=0.0, unit_dim=1, unit_fourier_features=4)
    assert isinstance(module.denoiser.repre_embed, FourierUnitEmbedding)
    assert module.denoiser.repre_embed.linear.in_features == 9
    assert any(p is module.denoiser.repre_embed.linear.weight for p in module.denoiser.trainable_parameters())
    randomize_shift_output(module)
    out = module.compute_losses(random_images(4), generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert_gradient_reaches_only_the_trained_parts(module)
    assert module.denoiser.repre_embed.linear.weight.grad.abs().sum() > 0


def test_bad_settings_name_the_key_and_the_switch_is_listed(ldm_ckpt):
    with pytest.raises(ConfigError, match="unit_fourier_features must be a whole number"):
        make_module(ldm_ckpt, unit_fourier_features=1.5)
    assert deviations_in_use({"unit_fourier_features": 4}) == {"unit_fourier_features": 4}
    assert deviations_in_use({"unit_fourier_features": 0}) == {}
