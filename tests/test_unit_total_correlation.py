"""The opt-in total-correlation penalty: the unit permutation, what a trained discriminator estimates
(copies of any form score high, independent units near zero), where each part's gradient goes, and
how the module wires it (off by default, one optimizer group, errors that name the key)."""

import pytest
import torch
from disdiff_support import make_module, random_images

from disdiff.config import ConfigError
from disdiff.models.unit_total_correlation import (
    TotalCorrelationDiscriminator,
    permute_units,
    total_correlation_losses,
)


def test_permute_units_shuffles_every_unit_on_its_own():
    z = torch.arange(64 * 3, dtype=torch.float32).reshape(64, 3, 1)
    perm = permute_units(z, torch.Generator().manual_seed(0))
    for k in range(3):  # each unit keeps its values, reordered
        assert torch.equal(perm[:, k].sort(dim=0).values, z[:, k])
    origin = (perm[..., 0] - torch.arange(3)) / 3  # the row each unit's value came from (z[b, k] = 3b + k)
    assert not torch.equal(origin[:, 0], origin[:, 1]) and not torch.equal(origin[:, 1], origin[:, 2])
    again = permute_units(z, torch.Generator().manual_seed(0))
    assert torch.equal(perm, again)


def _train_discriminator(sampler, steps: int = 300, seed: int = 0) -> float:
    """Train a discriminator on codes from ``sampler(B, generator)``; return its TC estimate on fresh codes."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    disc = TotalCorrelationDiscriminator(sampler(2, gen)[0].numel(), hidden=64)
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    for _ in range(steps):
        _, loss = total_correlation_losses(sampler(128, gen), disc, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(total_correlation_losses(sampler(2048, gen), disc, gen)[0])


def _independent(B, gen):
    return torch.randn(B, 3, 1, generator=gen)


def _with_copy(B, gen):
    u = torch.randn(B, 2, 1, generator=gen)
    return torch.cat([u, 2.0 * u[:, :1] + 1.0], dim=1)  # unit 2 = a linear copy of unit 0


def _with_non_monotone_twin(B, gen):
    u = torch.randn(B, 2, 1, generator=gen)
    return torch.cat([u, u[:, :1].square()], dim=1)  # unit 2 = u0²: uncorrelated with u0, yet a function of it


def test_a_trained_discriminator_sees_copies_of_any_form_and_not_independent_units():
    independent = _train_discriminator(_independent)
    copy = _train_discriminator(_with_copy)
    twin = _train_discriminator(_with_non_monotone_twin)
    assert abs(independent) < 0.1
    assert copy > 1.0
    assert twin > 0.5
    # the twin is invisible to a correlation: the estimate is not a correlation in disguise
    u = _with_non_monotone_twin(4096, torch.Generator().manual_seed(1))
    assert abs(torch.corrcoef(torch.stack([u[:, 0, 0], u[:, 2, 0]]))[0, 1]) < 0.05


def test_the_penalty_reaches_the_codes_only_and_the_discriminator_loss_the_discriminator_only():
    gen = torch.Generator().manual_seed(0)
    disc = TotalCorrelationDiscriminator(3)
    z = torch.randn(16, 3, 1, generator=gen, requires_grad=True)
    tc, disc_loss = total_correlation_losses(z, disc, gen)
    tc.backward(retain_graph=True)
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters())
    z.grad = None
    disc_loss.backward()
    assert z.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def test_the_estimate_ignores_the_units_scale_and_shift():
    gen = torch.Generator().manual_seed(0)
    disc = TotalCorrelationDiscriminator(3)
    z = torch.randn(32, 3, 1, generator=gen)
    scaled = z * torch.tensor([3.0, 0.1, 7.0]).view(1, 3, 1) + 5.0
    tc, _ = total_correlation_losses(z, disc)
    tc_scaled, _ = total_correlation_losses(scaled, disc)
    assert tc_scaled.item() == pytest.approx(tc.item(), abs=1e-4)


def test_module_term_is_off_by_default_and_reaches_only_encoder_and_discriminator(ldm_ckpt):
    x = random_images(8)
    published = make_module(ldm_ckpt, dis_weight=0.0)
    assert published.tc_discriminator is None
    out = published.compute_losses(x, generator=torch.Generator().manual_seed(0))
    assert "unit_tc" not in out and torch.equal(out["loss"], out["loss_rec"])
    assert len(published.configure_optimizers()["optimizer"].param_groups) == 2

    module = make_module(ldm_ckpt, dis_weight=0.0, unit_tc_weight=0.5)
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert len(groups) == 3 and {id(p) for p in groups[2]["params"]} == {id(p) for p in module.tc_discriminator.parameters()}
    assert groups[2]["lr"] == pytest.approx(10 * groups[1]["lr"])  # the default unit_tc_lr_multiplier
    out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
    expected = out["loss_rec"] + 0.5 * out["unit_tc"] + out["tc_discriminator_loss"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    # G = 0 at initialisation: L_r gives the encoder nothing, so its gradient is the penalty's
    out["loss"].backward()
    assert sum(p.grad.abs().sum() for p in module.encoder.parameters() if p.grad is not None) > 0
    assert all(p.grad is not None for p in module.tc_discriminator.parameters())
    module.zero_grad()
    out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
    (out["unit_tc"] + out["tc_discriminator_loss"]).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.denoiser.trainable_parameters())


def test_module_settings_name_the_key(ldm_ckpt):
    with pytest.raises(ConfigError, match="unit_tc_weight must be >= 0"):
        make_module(ldm_ckpt, unit_tc_weight=-1.0)
    with pytest.raises(ConfigError, match="unit_tc_lr_multiplier must be > 0"):
        make_module(ldm_ckpt, unit_tc_weight=0.1, unit_tc_lr_multiplier=0.0)
    with pytest.raises(ConfigError, match="unit_tc_weight > 0 needs num_units >= 2"):
        make_module(ldm_ckpt, num_units=1, unit_tc_weight=0.1)
