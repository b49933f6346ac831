"""The opt-in penalty on correlation between units: analytic values, invariances, where its gradient goes."""

import pytest
import torch
from disdiff_support import make_module, random_images

from disdiff.config import ConfigError
from disdiff.models.unit_decorrelation import cross_unit_correlation


def test_copies_score_one_and_independent_units_about_one_over_b():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4096, 1, 1, generator=g)
    copies = torch.cat([base, -3.0 * base + 2.0, 0.5 * base], dim=1)  # copies up to sign, scale and shift
    assert cross_unit_correlation(copies).item() == pytest.approx(1.0, abs=1e-4)
    B = 64
    values = [cross_unit_correlation(torch.randn(B, 6, 1, generator=g)).item() for _ in range(400)]
    assert sum(values) / len(values) == pytest.approx(1.0 / B, rel=0.15)


def test_within_unit_correlation_is_free_and_scale_does_not_matter():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(20000, 1, generator=g), torch.randn(20000, 1, generator=g)
    two_units = torch.stack([torch.cat([a, 2 * a], 1), torch.cat([b, -b], 1)], dim=1)  # (B, 2, 2)
    assert cross_unit_correlation(two_units).item() < 1e-3
    z = torch.randn(128, 3, 2, generator=g)
    scaled = z * torch.tensor([1.0, 10.0, 0.1]).view(1, 3, 1) + 5.0
    assert cross_unit_correlation(scaled).item() == pytest.approx(cross_unit_correlation(z).item(), rel=1e-4)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="B, N, d"):
        cross_unit_correlation(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="2 units"):
        cross_unit_correlation(torch.zeros(4, 1, 3))


def test_the_term_is_off_by_default_and_reaches_only_the_encoder(ldm_ckpt):
    x = random_images(8)
    published = make_module(ldm_ckpt, dis_weight=0.0)
    out = published.compute_losses(x, generator=torch.Generator().manual_seed(0))
    assert "unit_correlation" not in out and torch.equal(out["loss"], out["loss_rec"])

    module = make_module(ldm_ckpt, dis_weight=0.0, unit_decorrelation_weight=0.5)
    out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
    expected = cross_unit_correlation(out["z"])
    assert out["unit_correlation"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["loss_rec"].item() + 0.5 * expected.item(), rel=1e-6)
    # At initialisation G = 0, so L_r gives the encoder no gradient: the encoder's gradient is the
    # decorrelation term's alone, and the term reaches no shift-decoder parameter.
    out["loss"].backward()
    encoder_grad = sum(p.grad.abs().sum() for p in module.encoder.parameters() if p.grad is not None)
    assert encoder_grad > 0
    module.zero_grad()
    out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
    (module.deviations.unit_decorrelation_weight * out["unit_correlation"]).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.denoiser.trainable_parameters())
    with pytest.raises(ConfigError, match="unit_decorrelation_weight"):
        make_module(ldm_ckpt, unit_decorrelation_weight=-1.0)


def test_a_batch_of_one_has_no_decorrelation_term(ldm_ckpt):
    # eval mode: the encoder's BatchNorm cannot train on one image (the published module neither)
    module = make_module(ldm_ckpt, dis_weight=0.0, unit_decorrelation_weight=0.5).eval()
    out = module.compute_losses(random_images(1), generator=torch.Generator().manual_seed(0))
    assert "unit_correlation" not in out and torch.equal(out["loss"], out["loss_rec"])
